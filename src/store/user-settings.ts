/** Per-user settings: IANA time zone (recurrence, "today") and default reminder offsets. */
import type { TaskQuery } from '../domain/query.ts';
import type { Queryable } from './db.ts';

export interface UserSettings {
  user_id: string;
  timezone: string;
  default_reminders: string[];
}

export const DEFAULT_REMINDERS = ['P1D', 'PT1H'];

export class UserSettingsStore {
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

  async put(s: UserSettings): Promise<UserSettings> {
    await this.db.query(
      `INSERT INTO user_settings (user_id, timezone, default_reminders, updated_at) VALUES ($1, $2, $3, now())
       ON CONFLICT (user_id) DO UPDATE SET timezone = excluded.timezone, default_reminders = excluded.default_reminders,
         updated_at = now()`,
      [s.user_id, s.timezone, JSON.stringify(s.default_reminders)],
    );
    return s;
  }

  /** What listing `query` needs of the user's settings: their zone for a due window (due=today), else nothing. */
  async listOptions(userId: string, query: TaskQuery): Promise<{ timeZone?: string }> {
    return query.due ? { timeZone: (await this.get(userId)).timezone } : {};
  }
}
