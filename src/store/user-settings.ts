/** Per-user settings: IANA time zone (recurrence, "today") and default reminder offsets. */
import { LRUCache } from 'lru-cache';
import type { TaskQuery } from '../domain/query.ts';
import type { Queryable } from './db.ts';

export interface UserSettings {
  user_id: string;
  timezone: string;
  default_reminders: string[];
}

export const DEFAULT_REMINDERS = ['P1D', 'PT1H'];

/** How long a user's default reminders are reused for create answers (a change in this process clears it). */
const DEFAULTS_REUSE_MS = 5_000;
const DEFAULTS_CACHED_USERS = 10_000;

export class UserSettingsStore {
  private readonly defaults = new LRUCache<string, string[]>({
    max: DEFAULTS_CACHED_USERS,
    ttl: DEFAULTS_REUSE_MS,
  });

  constructor(
    private readonly db: Queryable,
    private readonly defaultTimezone: string,
  ) {}

  async get(userId: string): Promise<UserSettings> {
    const r = await this.db.query<UserSettings>(
      'SELECT user_id, timezone, default_reminders FROM user_settings WHERE user_id = $1',
      [userId],
    );
    return (
      r.rows[0] ?? { user_id: userId, timezone: this.defaultTimezone, default_reminders: DEFAULT_REMINDERS }
    );
  }

  /**
   * The user's default reminders for the plan in a create's answer, read at most every DEFAULTS_REUSE_MS per
   * user: a create costs no extra statement while a user keeps writing. A change made through another process
   * shows within that time (the reminders target always reads them fresh).
   */
  async defaultReminders(userId: string): Promise<string[]> {
    const hit = this.defaults.get(userId);
    if (hit) return hit;
    const value = (await this.get(userId)).default_reminders;
    this.defaults.set(userId, value);
    return value;
  }

  async put(s: UserSettings): Promise<UserSettings> {
    this.defaults.delete(s.user_id);
    await this.db.query(
      `INSERT INTO user_settings (user_id, timezone, default_reminders, updated_at) VALUES ($1, $2, $3, now())
       ON CONFLICT (user_id) DO UPDATE SET timezone = excluded.timezone, default_reminders = excluded.default_reminders,
         updated_at = now()`,
      [s.user_id, s.timezone, JSON.stringify(s.default_reminders)],
    );
    return s;
  }

  /** Sets the fields `change` names, keeping the others (PUT /api/me/settings, the MCP tool update_settings). */
  async update(
    userId: string,
    change: Partial<Pick<UserSettings, 'timezone' | 'default_reminders'>>,
  ): Promise<UserSettings> {
    const { timezone, default_reminders } = { ...(await this.get(userId)), ...change };
    return this.put({ user_id: userId, timezone, default_reminders });
  }

  /** What listing `query` needs of the user's settings: their zone for a due window (due=today), else nothing. */
  async listOptions(userId: string, query: TaskQuery): Promise<{ timeZone?: string }> {
    return query.due ? { timeZone: (await this.get(userId)).timezone } : {};
  }
}
