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
    const stored = await this.stored(userId);
    return {
      user_id: userId,
      timezone: stored?.timezone ?? this.defaultTimezone,
      default_reminders: stored?.default_reminders ?? DEFAULT_REMINDERS,
    };
  }

  /** The row as stored; `timezone` null when the user never chose one (they follow DEFAULT_TIMEZONE). */
  private async stored(userId: string) {
    const r = await this.db.query<{ timezone: string | null; default_reminders: string[] }>(
      `SELECT CASE WHEN timezone_set THEN timezone END AS timezone, default_reminders
         FROM user_settings WHERE user_id = $1`,
      [userId],
    );
    return r.rows[0];
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

  /**
   * Stores the settings; a null zone: the user follows DEFAULT_TIMEZONE (timezone_set false; the column keeps
   * today's default for processes of the previous version during a rolling upgrade).
   */
  private async put(userId: string, timezone: string | null, defaultReminders: string[]): Promise<void> {
    this.defaults.delete(userId);
    await this.db.query(
      `INSERT INTO user_settings (user_id, timezone, timezone_set, default_reminders, updated_at)
       VALUES ($1, $2, $3, $4, now())
       ON CONFLICT (user_id) DO UPDATE SET timezone = excluded.timezone, timezone_set = excluded.timezone_set,
         default_reminders = excluded.default_reminders, updated_at = now()`,
      [userId, timezone ?? this.defaultTimezone, timezone !== null, JSON.stringify(defaultReminders)],
    );
  }

  /**
   * Sets the fields `change` names, keeping the others (PUT /api/me/settings, the MCP tool update_settings). A
   * zone not given stays as it was: unset when never chosen, so the user keeps following DEFAULT_TIMEZONE.
   */
  async update(
    userId: string,
    change: Partial<Pick<UserSettings, 'timezone' | 'default_reminders'>>,
  ): Promise<UserSettings> {
    const stored = await this.stored(userId);
    const timezone = change.timezone ?? stored?.timezone ?? null;
    const defaultReminders = change.default_reminders ?? stored?.default_reminders ?? DEFAULT_REMINDERS;
    await this.put(userId, timezone, defaultReminders);
    return {
      user_id: userId,
      timezone: timezone ?? this.defaultTimezone,
      default_reminders: defaultReminders,
    };
  }

  /** What listing `query` needs of the user's settings: their zone for a due window (due=today), else nothing. */
  async listOptions(userId: string, query: TaskQuery): Promise<{ timeZone?: string }> {
    return query.due ? { timeZone: (await this.get(userId)).timezone } : {};
  }
}
