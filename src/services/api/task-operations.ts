/**
 * The task operations the REST routes and the MCP tools both offer (create, update, complete, reopen,
 * delete, get, list and search), written once: validation (domain/task.ts, reading the user's time zone
 * only for a recurrence rule), the write through the task store with its event, and the reminder plan of
 * the answer. REST and MCP only translate: HTTP requests and answers, tool arguments (words read into
 * instants first) and results.
 */
import type { ReminderPlan } from '../../domain/reminders.ts';
import { NotFoundError, ValidationError, type ExpectedVersion } from '../../domain/errors.ts';
import { parseTaskQuery } from '../../domain/query.ts';
import {
  needsTimeZone,
  type complete,
  validateCreate,
  validatePatch,
  type Task,
  type Transition,
  type ValidationContext,
} from '../../domain/task.ts';
import { planOfChange, type ReminderPlanner } from '../../store/reminder-plan.ts';
import type { EventMeta, TaskStore } from '../../store/tasks.ts';
import type { UserSettingsStore } from '../../store/user-settings.ts';

/** A change's answer: the task, and its reminder plan when the change moved its reminders. */
export interface TaskChange {
  task: Task;
  reminder_plan?: ReminderPlan;
}

export interface CreateOptions {
  /**
   * Makes a retry safe: the same key and request within 24 hours answer the first task. Read once the body
   * is valid (a bad body is answered before a bad key).
   */
  idempotency?: () => { key: string; requestHash: string } | undefined;
  /** The validation context when the caller has it already (MCP read the time zone for words). */
  ctx?: ValidationContext;
}

export class TaskOperations {
  constructor(
    private readonly deps: {
      store: TaskStore;
      settings: UserSettingsStore;
      /** The reminder plan of an answer (the reminders target's rules). */
      planReminders: ReminderPlanner;
    },
  ) {}

  /** What validating `input` needs: the user's time zone, read only when it has a recurrence rule. */
  private async contextFor(userId: string, input: unknown): Promise<ValidationContext> {
    return needsTimeZone(input) ? { timezone: (await this.deps.settings.get(userId)).timezone } : {};
  }

  async create(
    userId: string,
    input: unknown,
    meta: EventMeta,
    opts: CreateOptions = {},
  ): Promise<{ task: Task; replayed: boolean; reminder_plan: ReminderPlan }> {
    const { store } = this.deps;
    const ctx = opts.ctx ?? (await this.contextFor(userId, input));
    const parsed = validateCreate(input, { ...ctx, now: ctx.now ?? store.now() });
    if (!parsed.ok) throw new ValidationError(parsed.issues);
    const idempotency = opts.idempotency?.();
    const { task, replayed } = idempotency
      ? await store.createOnce(userId, parsed.value, meta, idempotency)
      : { task: await store.create(userId, parsed.value, meta), replayed: false };
    return { task, replayed, reminder_plan: await this.deps.planReminders(userId, task) };
  }

  /** Changes the fields `input` sets (If-Match / expected_version: `expected`). */
  async update(
    userId: string,
    id: string,
    input: unknown,
    meta: EventMeta,
    opts: { expected?: ExpectedVersion | undefined; ctx?: ValidationContext } = {},
  ): Promise<TaskChange> {
    const ctx = opts.ctx ?? (await this.contextFor(userId, input));
    let parsed = validatePatch(input, ctx);
    // A refused rule may be the task's own, sent back by a client that sends the whole task, stored before a
    // limit of today's: read the task (only then) and validate again, taking that rule as it is.
    if (!parsed.ok && needsTimeZone(input)) {
      const stored = await this.deps.store.get(userId, id).catch((err: unknown) => {
        if (err instanceof NotFoundError) return undefined; // the refusal says what is wrong with the body
        throw err;
      });
      if (stored?.recurrence) parsed = validatePatch(input, { ...ctx, storedRecurrence: stored.recurrence });
    }
    if (!parsed.ok) throw new ValidationError(parsed.issues);
    return this.answer(
      userId,
      await this.deps.store.updateTransition(userId, id, parsed.value, meta, opts.expected),
    );
  }

  /** Completes, reopens or toggles (`change`, from domain/task.ts). */
  async transition(
    userId: string,
    id: string,
    change: typeof complete,
    meta: EventMeta,
    expected?: ExpectedVersion,
  ): Promise<TaskChange> {
    return this.answer(userId, await this.deps.store.transition(userId, id, change, meta, expected));
  }

  delete(userId: string, id: string, meta: EventMeta, expected?: ExpectedVersion): Promise<Task> {
    return this.deps.store.delete(userId, id, meta, expected);
  }

  get(userId: string, id: string): Promise<Task> {
    return this.deps.store.get(userId, id);
  }

  /** One page of the list (filters, full-text search, sort), the query as the REST list takes it. */
  async list(userId: string, query: Record<string, unknown>) {
    const parsed = parseTaskQuery(query);
    if (!parsed.ok) throw new ValidationError(parsed.issues);
    return this.deps.store.list(
      userId,
      parsed.value,
      await this.deps.settings.listOptions(userId, parsed.value),
    );
  }

  private async answer(userId: string, t: Transition): Promise<TaskChange> {
    const reminder_plan = await planOfChange(this.deps.planReminders, userId, t);
    return reminder_plan ? { task: t.task, reminder_plan } : { task: t.task };
  }
}
