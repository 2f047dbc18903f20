/* The real-time task board: plain JavaScript, no framework, no build step.
 * - REST: /api/tasks (list with filters and sort, create, edit, complete/reopen, delete) with the bearer token.
 * - Live: WebSocket /ws with subprotocols ["taskflow.v1", "bearer.<jwt>"]; every task.changed carries the
 *   user's sequence; on reconnect `?since=<last sequence>` replays what was missed, or the gateway answers
 *   {type:"resync"} and the list is reloaded. The list a frame asked to reload stays stale until it is read: a
 *   failed read is tried again (backoff, the next hello, back online), the frame's sequence being taken already.
 * - Notifications: loaded from /api/notifications at once when the gateway pushes {type:"notification"},
 *   and polled every 30 s as a fallback (a 404 turns polling off: no notifications service).
 * - Assistant: POST /api/chat with Accept: text/event-stream; its tool calls show as they run, the reply as
 *   it is written, and their effect on the list arrives over the WebSocket like any change. */
/* global document, window, localStorage, fetch, WebSocket, location, URLSearchParams, atob, TextDecoderStream */
'use strict';

const $ = (sel) => document.querySelector(sel);
const TOKEN_KEY = 'taskflow.token';
const VIEW_KEY = 'taskflow.view';
/** `<this>.<user>`: the browser zone the user chose not to take (the offer is not made again for it). */
const ZONE_KEPT_KEY = 'taskflow.zone-kept';
const VIEWS = ['today', 'upcoming', 'overdue', 'all'];

const state = {
  token: localStorage.getItem(TOKEN_KEY) || '',
  tasks: [],
  sequence: null, // the last task.changed sequence this page has applied
  ws: null,
  wsAttempts: 0,
  reconnectTimer: null,
  pingTimer: null,
  reloadTimer: null,
  staleSince: null, // state.loads when a frame said the list changed: stale until a load started after it reads it
  reloadAttempts: 0, // the list's reads that failed in a row while it was stale (their backoff)
  notifTimer: null,
  notifSeen: new Set(),
  notifLoaded: false,
  flash: new Set(),
  editing: false,
  loads: 0, // list loads started: an answer to an older one (a search typed since) is dropped
  nextCursor: null, // the list's next page, when it has one
  pages: 1, // how many pages of the list are shown ("Show more")
  listQuery: '', // the query those pages are of
  lastMessageAt: 0, // when the socket last heard from the server (a pong counts): a silent one is dead
  view: VIEWS.includes(localStorage.getItem(VIEW_KEY)) ? localStorage.getItem(VIEW_KEY) : 'all',
  selected: null, // the id of the task the keys act on (j/k, x, e)
  conversation: null, // the assistant's conversation id, once it has answered
  createKey: null, // {sent, id}: the Idempotency-Key of the create not known to have succeeded yet
  chatKey: null, // {sent, id}: the same for the assistant's message not known to have been answered
};

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function subjectOf(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).sub || null;
  } catch {
    return null;
  }
}

const SESSION_EXPIRED = 'Your session expired; sign in again.';
const UNREACHABLE = 'The board cannot reach the server: check the connection and try again.';

async function api(method, path, body, extraHeaders = {}) {
  const sentAs = state.token;
  // Signed out: nothing is sent (a request without a token would replace why the session ended with its 401).
  if (!sentAs) throw new Error('unauthorized');
  const headers = { authorization: `Bearer ${sentAs}`, ...extraHeaders };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch {
    // Offline (fetch says only "Failed to fetch"): say so, and check an open socket, which may not have noticed.
    if (state.ws) wakeUp();
    const err = new Error(UNREACHABLE);
    err.offline = true;
    throw err;
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  // The answer of a session that ended meanwhile (signed out, or in as someone else) is dropped, as a 401's is:
  // it is not shown to the next user.
  if (state.token !== sentAs) throw new Error('unauthorized');
  if (res.status === 401) {
    const detail = (data && data.detail) || 'the token was not accepted';
    signOut(/expired/i.test(detail) ? SESSION_EXPIRED : detail);
    throw new Error('unauthorized');
  }
  if (!res.ok) {
    const err = new Error((data && data.detail) || `${method} ${path} failed (${res.status})`);
    err.status = res.status;
    err.problem = data;
    err.retryAfter = Number(res.headers.get('retry-after')) || 1;
    throw err;
  }
  return data;
}

/** An error stays on the board until the person dismisses it (a reload does not wipe it). */
function showError(msg) {
  $('#board-error-text').textContent = msg;
  $('#board-error').hidden = false;
}
const dismissError = () => ($('#board-error').hidden = true);

/** `PT1H` -> "1 hour before", an instant -> its local time: how a reminder spec reads to a person. */
function describeSpec(spec) {
  const m = /^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?$/.exec(spec);
  if (!m) return new Date(spec).toLocaleString();
  const parts = [
    [m[1], 'week'],
    [m[2], 'day'],
    [m[3], 'hour'],
    [m[4], 'minute'],
  ]
    .filter(([n]) => n && Number(n) > 0)
    .map(([n, unit]) => `${Number(n)} ${unit}${Number(n) === 1 ? '' : 's'}`);
  return `${parts.join(' ')} before`;
}

/**
 * What a create's reminder plan means for the person who just created the task: the reminders it asked for
 * that will not exist (already past), and the one at the due time that replaces them. Shown until the next
 * create; nothing when every reminder was set.
 */
function showReminderPlan(plan) {
  const notice = $('#board-notice');
  const skipped = (plan && plan.skipped) || [];
  const atDue = plan && plan.scheduled.some((r) => r.why === 'at_due_instead');
  notice.textContent = skipped.length
    ? `Reminder not set, already past: ${skipped.map((r) => r.specs.map(describeSpec).join(', ')).join('; ')}.` +
      (atDue ? ' You will be reminded at the due time instead.' : '')
    : '';
  notice.hidden = !skipped.length;
}

// ---- tasks -------------------------------------------------------------------------------------------

/** The list query of the current view and filters: a view narrows to pending tasks by due date. */
function query() {
  const q = new URLSearchParams();
  if (state.view === 'today' || state.view === 'upcoming') {
    q.set('status', 'pending');
    q.set('due', state.view);
  } else if (state.view === 'overdue') q.set('overdue', 'true');
  else if ($('#f-status').value !== 'all') q.set('status', $('#f-status').value);
  if ($('#f-priority').value) q.set('priority', $('#f-priority').value);
  const tag = $('#f-tag').value.trim();
  if (tag) q.set('tag', tag);
  const search = $('#f-search').value.trim();
  if (search) q.set('q', search);
  q.set('sort', $('#f-sort').value);
  q.set('limit', '200');
  return q.toString();
}

async function loadTasks() {
  const load = ++state.loads;
  clearTimeout(state.reloadTimer); // a reload waiting (coalesced, or tried again) is this one: it reads the query now
  const q = query();
  if (q !== state.listQuery) {
    state.listQuery = q;
    state.pages = 1; // another view, filter or search starts at its first page
  }
  try {
    const [first, counts] = await Promise.all([
      api('GET', `/api/tasks?${q}`),
      api('GET', '/api/tasks/counts'),
    ]);
    let items = first.items;
    let cursor = first.next_cursor;
    // The pages "Show more" added are read again too: a live update must not cut the list back to its first.
    for (let shown = 1; shown < state.pages && cursor; shown++) {
      const next = await api('GET', `/api/tasks?${q}&cursor=${encodeURIComponent(cursor)}`);
      items = [...items, ...next.items];
      cursor = next.next_cursor;
    }
    if (load !== state.loads) return; // a newer load (another search, view or filter) has been asked for
    if (state.staleSince !== null && load > state.staleSince) state.staleSince = null;
    state.reloadAttempts = 0;
    showBusy(null);
    state.tasks = items;
    state.nextCursor = cursor;
    for (const span of document.querySelectorAll('#views [data-count]'))
      span.textContent = String(counts[span.dataset.count] ?? '');
    render();
  } catch (err) {
    if (load !== state.loads || err.message === 'unauthorized') return;
    // The server is busy (503 + Retry-After): load again then, rather than leave the list stale with an error,
    // and say so (a blank board with no word looks like no tasks).
    if (err.status === 503) {
      showBusy(err.retryAfter);
      clearTimeout(state.reloadTimer);
      state.reloadTimer = setTimeout(loadTasks, err.retryAfter * 1000);
      return;
    }
    // A stale list's run of failed reads says so once: tried again every few seconds, it brought back the error
    // the person had dismissed.
    if (state.reloadAttempts === 0 || state.staleSince === null) showError(err.message);
    if (state.staleSince === null) return;
    // A change a frame announced is not on the list yet, and the frame's sequence is taken (a resume replays
    // nothing): read again until it is, whatever failed (a 502 or 504 while the API rolls, the network).
    // Unread, the board said "live" and never showed the change.
    const seconds = Math.max(backoffMs(state.reloadAttempts++, 1_000, 30_000) / 1000, err.retryAfter || 0);
    showBusy(seconds, err.offline ? 'The server cannot be reached' : 'The list could not be read');
    clearTimeout(state.reloadTimer);
    state.reloadTimer = setTimeout(loadTasks, seconds * 1000);
  }
}

/**
 * "The server is busy" (or `why` it was not read) while the list waits to be read again (`seconds`); null: the
 * list was read.
 */
function showBusy(seconds, why = 'The server is busy') {
  const busy = $('#board-busy');
  busy.textContent = seconds === null ? '' : `${why}; the list is read again in ${Math.ceil(seconds)} s.`;
  busy.hidden = seconds === null;
}

/** A frame says the list changed: it is stale until a load started from now on reads it. */
function listChanged() {
  state.staleSince = state.loads;
}

/** Reconnected, or back online: a list still stale is read now rather than at its next try. */
function reloadIfStale() {
  if (state.token && state.staleSince !== null) loadTasks();
}

/** One page more (the list reads 200 tasks a page), kept through later reloads of the list. */
function loadMore() {
  if (!state.nextCursor) return;
  state.pages++;
  return loadTasks();
}

function setView(view) {
  state.view = view;
  localStorage.setItem(VIEW_KEY, view);
  for (const b of document.querySelectorAll('#views button'))
    b.setAttribute('aria-pressed', String(b.dataset.view === view));
  $('#f-status').disabled = view !== 'all'; // the other views are of pending tasks
  loadTasks();
}

function scheduleReload() {
  clearTimeout(state.reloadTimer);
  state.reloadTimer = setTimeout(loadTasks, 60);
}

/** An instant as the person reads it: their locale and zone, to the minute. */
const dateTime = (iso) => new Date(iso).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });

function formatDue(iso) {
  return iso ? `due ${dateTime(iso)}` : null;
}

const PRESETS = ['daily', 'weekdays', 'weekly', 'monthly', 'yearly'];

/** "repeats every 2 weeks on Monday" for a task's recurrence: read from its rule (a preset has no interval). */
const describeRecurrence = (r) => (r ? `repeats ${describeRule(r.rrule)}` : null);

const FREQS = { DAILY: 'day', WEEKLY: 'week', MONTHLY: 'month', YEARLY: 'year' };
const DAYS = {
  MO: 'Monday',
  TU: 'Tuesday',
  WE: 'Wednesday',
  TH: 'Thursday',
  FR: 'Friday',
  SA: 'Saturday',
  SU: 'Sunday',
};
const MONTHS = 'January February March April May June July August September October November December'.split(
  ' ',
);
const ORDINALS = {
  1: 'first',
  2: 'second',
  3: 'third',
  4: 'fourth',
  5: 'fifth',
  '-1': 'last',
  '-2': 'second to last',
};
const nth = (n) => ORDINALS[n] || (Number(n) > 0 ? `${n}th` : `${-Number(n)}th to last`);
const joined = (xs) => (xs.length > 1 ? `${xs.slice(0, -1).join(', ')} and ${xs.at(-1)}` : xs[0]);

/** `-1FR` -> "the last Friday", `MO` -> "Monday". */
function dayOf(spec) {
  const [, n, day] = /^([+-]?\d+)?([A-Z]{2})$/.exec(spec) || [];
  if (!DAYS[day]) return spec;
  return n ? `the ${nth(Number(n))} ${DAYS[day]}` : DAYS[day];
}

/**
 * An RRULE in words: "weekly", "every 2 weeks on Monday and Thursday", "monthly on the last Friday",
 * "yearly in March on day 1, 5 times". Parts it has no words for are named as they are, in lower case.
 */
function describeRule(rrule) {
  const parts = Object.fromEntries(rrule.split(';').map((p) => p.split('=')));
  const { FREQ, INTERVAL, BYDAY, BYMONTHDAY, BYMONTH, BYHOUR, BYMINUTE, COUNT, UNTIL, ...rest } = parts;
  const unit = FREQS[FREQ];
  if (!unit) return rrule.toLowerCase().replace(/;/g, ', ').replace(/=/g, ' ');
  const n = Number(INTERVAL || 1);
  const words = [n > 1 ? `every ${n} ${unit}s` : FREQ === 'DAILY' ? 'daily' : `${unit}ly`];
  if (FREQ === 'WEEKLY' && n === 1 && BYDAY === 'MO,TU,WE,TH,FR') words[0] = 'on weekdays';
  else if (BYDAY) words.push(`on ${joined(BYDAY.split(',').map(dayOf))}`);
  if (BYMONTH) words.push(`in ${joined(BYMONTH.split(',').map((m) => MONTHS[m - 1] || m))}`);
  if (BYMONTHDAY)
    words.push(
      `on ${joined(BYMONTHDAY.split(',').map((d) => (Number(d) < 0 ? `the ${nth(d)} day` : `day ${d}`)))}`,
    );
  if (BYHOUR) {
    const minutes = (BYMINUTE || '0').split(',').map((m) => m.padStart(2, '0'));
    words.push(`at ${joined(BYHOUR.split(',').flatMap((h) => minutes.map((m) => `${h}:${m}`)))}`);
  } else if (BYMINUTE) words.push(`at minute ${joined(BYMINUTE.split(','))}`);
  for (const [k, v] of Object.entries(rest))
    if (k !== 'WKST') words.push(`${k.toLowerCase()} ${v.toLowerCase()}`); // the week's first day: no words
  let text = words.join(' ');
  if (COUNT) text += `, ${COUNT} time${COUNT === '1' ? '' : 's'}`;
  if (UNTIL) text += `, until ${untilDate(UNTIL)}`;
  return text;
}

/** `20261231T235959Z` (UNTIL, always UTC) as the person's date. */
function untilDate(until) {
  const m = /^(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})Z)?$/.exec(until);
  if (!m) return until;
  const [, y, mo, d, h = '0', mi = '0', se = '0'] = m;
  return new Date(Date.UTC(y, mo - 1, d, h, mi, se)).toLocaleDateString([], { dateStyle: 'medium' });
}

function taskItem(t) {
  const li = el('li', {
    class: `task ${t.status}${state.flash.has(t.id) ? ' flash' : ''}${state.selected === t.id ? ' selected' : ''}`,
    dataset: { id: t.id, status: t.status, drawn: JSON.stringify(t) },
    tabindex: '-1',
  });
  const done = t.status === 'completed';
  // Named by what a press does now, and to which task (a screen reader lists controls out of their row).
  const toggle = el('input', {
    type: 'checkbox',
    class: 'toggle',
    'aria-label': done ? `reopen ${t.title}` : `mark ${t.title} done`,
    onchange: async () => {
      const ok = await run(() => api('POST', `/api/tasks/${t.id}/${toggle.checked ? 'complete' : 'reopen'}`));
      if (!ok) toggle.checked = done; // not changed: the box shows the task as it is
    },
  });
  toggle.checked = done;
  // dir="auto": a title or description in Hebrew or Arabic reads right to left, its punctuation at its end.
  const main = el(
    'div',
    { class: 'main' },
    el('span', { class: 'title', dir: 'auto' }, t.title),
    t.description ? el('div', { class: 'description', dir: 'auto' }, t.description) : null,
    el(
      'div',
      { class: 'facts' },
      t.priority !== 'none' ? el('span', { class: `badge ${t.priority}` }, t.priority) : null,
      ...t.tags.map((tag) => el('span', { class: 'tag' }, `#${tag}`)),
      t.due_date ? el('span', { class: 'meta due' }, formatDue(t.due_date)) : null,
      t.recurrence ? el('span', { class: 'meta' }, describeRecurrence(t.recurrence)) : null,
    ),
  );
  const actions = el(
    'div',
    { class: 'actions' },
    el(
      'button',
      {
        type: 'button',
        class: 'secondary edit',
        'aria-label': `Edit ${t.title}`,
        onclick: () => edit(li, t),
      },
      'Edit',
    ),
    el(
      'button',
      {
        type: 'button',
        class: 'secondary delete',
        'aria-label': `Delete ${t.title}`,
        onclick: () => removeTask(t),
      },
      'Delete',
    ),
  );
  li.append(toggle, main, actions);
  return li;
}

/** Deletes at once and offers an undo for a few seconds: the task is created again with its fields. */
async function removeTask(t) {
  await run(async () => {
    await api('DELETE', `/api/tasks/${t.id}`);
    const deletedBy = state.token;
    toast(`Deleted “${t.title}”.`, {
      label: 'Undo',
      onclick: () =>
        run(async () => {
          // Only in the session that deleted it: another user's Undo would create it in their account.
          if (state.token !== deletedBy) return;
          const again = {
            title: t.title,
            description: t.description,
            priority: t.priority,
            tags: t.tags,
            due_date: t.due_date,
            reminders: t.reminders,
            status: t.status,
          };
          // A completed occurrence of a series comes back without its rule: the series went on with the next
          // occurrence already, and with the rule a completed task would make another one. Else the rule comes
          // back as it was read (the API takes that object), its preset too.
          if (t.recurrence && t.status !== 'completed') again.recurrence = { ...t.recurrence };
          try {
            await api('POST', '/api/tasks', again);
          } catch (err) {
            // The last occurrence of its series: created again it is a new series whose rule never repeats,
            // which the API refuses (422 naming the rule). It comes back without it, which changes nothing:
            // completed, it would make no next occurrence either way.
            const fields = (err.problem && err.problem.errors) || [];
            const ruleOnly =
              fields.length > 0 && fields.every((e) => /^recurrence(\.|$)/.test(e.field || ''));
            if (err.status !== 422 || !again.recurrence || !ruleOnly) throw err;
            delete again.recurrence;
            await api('POST', '/api/tasks', again);
          }
          await loadTasks();
        }),
    });
  });
}

/** `2026-03-01T12:00:00Z` as the value of a datetime-local input (the browser's zone). */
function localInputValue(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** Every field of a task in one form; only what changed is sent. */
function edit(li, t) {
  // One form at a time: a second would be lost with the first when either closes (the list is drawn again).
  const open = document.querySelector('#tasks .edit-form');
  if (open) {
    open.querySelector('.edit-title')?.focus();
    return;
  }
  state.editing = true;
  const field = (label, input) => el('label', { class: 'field' }, el('span', {}, label), input);
  // maxlength counts UTF-16 units, the API code points (an emoji is two of the one, one of the other): twice the
  // API's limits, and the API says when a text is too long.
  const title = el('input', { class: 'edit-title', value: t.title, maxlength: '1000', required: true });
  const description = el('textarea', { class: 'edit-description', rows: '3', maxlength: '20000' });
  description.value = t.description;
  // The fields as the form shows them: an input drops line breaks and a textarea writes CRLF as LF, so a title
  // or description left alone differs from the task's and must not be sent (it would rewrite the text).
  const shown = { title: title.value, description: description.value };
  const priority = el(
    'select',
    { class: 'edit-priority' },
    ['none', 'low', 'medium', 'high', 'urgent'].map((p) =>
      el('option', { value: p, selected: p === t.priority }, p),
    ),
  );
  const tags = el('input', { class: 'edit-tags', value: t.tags.join(', ') });
  const due = el('input', { class: 'edit-due', type: 'datetime-local', value: localInputValue(t.due_date) });
  // Empty: the user's defaults (null); "none": no reminders ([]), which must not read as the defaults.
  const reminders = el('input', {
    class: 'edit-reminders',
    value: t.reminders === null ? '' : t.reminders.length ? t.reminders.join(', ') : 'none',
    placeholder: 'your defaults; none; or e.g. PT1H, P1D',
  });
  const shownReminders = reminders.value;
  const current = t.recurrence ? t.recurrence.preset || 'custom' : 'none';
  const recurrence = el(
    'select',
    { class: 'edit-recurrence' },
    el('option', { value: 'none', selected: current === 'none' }, 'does not repeat'),
    PRESETS.map((p) => el('option', { value: p, selected: p === current }, p)),
    current === 'custom' ? el('option', { value: 'custom', selected: true }, t.recurrence.rrule) : null,
  );
  const preview = el('p', { class: 'meta edit-preview', 'aria-live': 'polite' });
  /** The next dates of the rule and due date as the form has them now (saved or not), from the server. */
  const showPreview = async () => {
    const q = new URLSearchParams({ count: '5' });
    if (recurrence.value === 'none') return (preview.textContent = '');
    if (recurrence.value !== current) q.set('recurrence', recurrence.value);
    if (!due.value) return (preview.textContent = 'A repeating task needs a due date.');
    if (due.value !== localInputValue(t.due_date)) q.set('due', new Date(due.value).toISOString());
    try {
      const r = await api('GET', `/api/tasks/${t.id}/occurrences?${q}`);
      preview.textContent = r.occurrences.length
        ? `Next: ${r.occurrences.map(dateTime).join(' · ')}`
        : 'No further occurrences.';
    } catch (err) {
      preview.textContent = err.status === 404 ? '' : err.message; // 404: no recurrence service here
    }
  };
  recurrence.addEventListener('change', showPreview);
  due.addEventListener('change', showPreview);
  const changes = () => {
    const body = {};
    if (title.value !== shown.title) body.title = title.value;
    if (description.value !== shown.description) body.description = description.value;
    if (priority.value !== t.priority) body.priority = priority.value;
    const tagList = splitTags(tags.value);
    if (tagList.join(',') !== t.tags.join(',')) body.tags = tagList;
    // Compared as shown (to the minute): an untouched input keeps the task's exact instant.
    if (due.value !== localInputValue(t.due_date))
      body.due_date = due.value ? new Date(due.value).toISOString() : null;
    if (reminders.value.trim() !== shownReminders) body.reminders = reminderSpecs(reminders.value);
    if (recurrence.value !== current) body.recurrence = recurrence.value === 'none' ? null : recurrence.value;
    return body;
  };
  const close = () => {
    state.editing = false;
    render();
  };
  const problem = el('p', { class: 'error edit-error', role: 'alert' });
  const form = el(
    'form',
    {
      class: 'edit-form',
      // The form stays open until the change is saved: a refusal (a field the API does not take, a version
      // another tab or device saved meanwhile) is shown in it, and nothing typed is lost.
      onsubmit: async (e) => {
        e.preventDefault();
        const body = changes();
        problem.textContent = '';
        try {
          if (Object.keys(body).length) {
            const changed = await api('PATCH', `/api/tasks/${t.id}`, body, { 'if-match': `"${t.version}"` });
            if (changed.reminder_plan) showReminderPlan(changed.reminder_plan);
          }
          state.editing = false;
          await loadTasks();
        } catch (err) {
          if (err.message === 'unauthorized') return;
          problem.textContent =
            err.status === 412
              ? 'This task was changed elsewhere since you opened it. Copy what you typed, then Cancel to see the new version.'
              : err.status === 404
                ? 'This task was deleted elsewhere. Copy what you typed, then Cancel.'
                : err.message;
        }
      },
      onkeydown: (e) => {
        if (e.key === 'Escape') close();
      },
    },
    field('Title', title),
    field('Description', description),
    el('div', { class: 'row' }, field('Priority', priority), field('Tags', tags)),
    el('div', { class: 'row' }, field('Due', due), field('Reminders', reminders)),
    field('Repeats', recurrence),
    preview,
    problem,
    el(
      'div',
      { class: 'row' },
      el('button', { type: 'submit' }, 'Save'),
      el('button', { type: 'button', class: 'secondary', onclick: close }, 'Cancel'),
    ),
  );
  li.replaceChildren(form);
  title.focus();
  void showPreview();
}

/**
 * Draws the list. An open edit form stays as it is, where it is (not moved: that would take the focus and
 * what is being typed), and the other tasks are drawn around it, live updates included. A row whose task is
 * unchanged is kept, not drawn again: the list is a live region, and one change is announced as one row.
 */
function render() {
  const list = $('#tasks');
  const open = state.editing ? list.querySelector('.edit-form')?.closest('li') : null;
  // The task that had the focus (its row, or a field of its form) has it again when its row is redrawn.
  const focused = list.contains(document.activeElement)
    ? document.activeElement.closest('li')?.dataset.id
    : null;
  const drawn = new Map([...list.children].map((li) => [li.dataset.id, li]));
  const rows = state.tasks.map((t) =>
    open?.dataset.id === t.id ? open : keptRow(drawn.get(t.id), t) || taskItem(t),
  );
  if (open && !rows.includes(open)) rows.unshift(open); // deleted elsewhere: the form stays, on top
  const keep = new Set(rows);
  for (const node of [...list.children]) if (!keep.has(node)) node.remove();
  let at = list.firstChild;
  for (const row of rows) {
    if (row === at) at = at.nextSibling;
    else list.insertBefore(row, at);
  }
  if (focused && !list.contains(document.activeElement))
    list.querySelector(`li.task[data-id="${focused}"]`)?.focus();
  $('#empty').hidden = state.tasks.length > 0;
  $('#more').hidden = !state.nextCursor;
  state.flash.clear();
}

/** The reminders field: empty is the user's defaults (null), "none" is none ([]), else the specs. */
function reminderSpecs(text) {
  if (!text.trim()) return null;
  return /^none$/i.test(text.trim()) ? [] : splitTags(text);
}

/** The row drawn before for `t` when it shows `t` as it is now (not an edit form, nothing to flash). */
function keptRow(li, t) {
  if (!li || li.dataset.drawn !== JSON.stringify(t) || state.flash.has(t.id) || li.querySelector('form'))
    return null;
  li.classList.toggle('selected', state.selected === t.id);
  li.classList.remove('flash');
  return li;
}

const splitTags = (s) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

/** Runs an action, then reloads the list; false when it failed (shown, unless the session ended). */
async function run(fn) {
  try {
    await fn();
    scheduleReload();
    return true;
  } catch (err) {
    if (err.message === 'unauthorized') return false; // signed out, with the reason: nothing more to send
    showError(err.message);
    if (!err.offline) await loadTasks();
    return false;
  }
}

async function createTask(e) {
  e.preventDefault();
  const add = $('#create-form button[type=submit]');
  if (add.disabled) return; // a create is on its way: a second press would make the task twice
  const body = { title: $('#new-title').value, priority: $('#new-priority').value };
  const tags = splitTags($('#new-tags').value);
  if (tags.length) body.tags = tags;
  const due = $('#new-due').value;
  if (due) body.due_date = new Date(due).toISOString();
  const key = idempotencyKey('createKey', body);
  add.disabled = true;
  try {
    await run(async () => {
      const created = await api('POST', '/api/tasks', body, { 'idempotency-key': key });
      state.createKey = null;
      showReminderPlan(created.reminder_plan);
      $('#create-form').reset();
      if (!created.due_date && state.view !== 'all') {
        // Today, Upcoming and Overdue are of tasks with a due date: say where this one went.
        toast(`Added “${created.title}” to All: it has no due date.`, {
          label: 'Show All',
          onclick: () => setView('all'),
        });
      }
      await loadTasks(); // the live update would do it too; this is immediate
    });
  } finally {
    add.disabled = false;
  }
}

/**
 * The Idempotency-Key of a create (`slot` createKey) or an assistant's message (chatKey): the same for the same
 * body sent again after a failure (an answer lost on the way may mean the first one was created, or answered:
 * the API then answers it instead of doing it again).
 */
function idempotencyKey(slot, body) {
  const sent = JSON.stringify(body);
  if (state[slot]?.sent !== sent) {
    const id = window.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(36).slice(2)}`;
    state[slot] = { sent, id };
  }
  return state[slot].id;
}

// ---- live updates ------------------------------------------------------------------------------------

function setStatus(s) {
  const pill = $('#ws-status');
  pill.textContent = s;
  pill.className = `pill ${s}`;
}

function connect() {
  if (!state.token) return;
  clearTimeout(state.reconnectTimer);
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const resume = state.sequence !== null;
  const url = `${proto}://${location.host}/ws${resume ? `?since=${state.sequence}` : ''}`;
  setStatus('connecting');
  let ws;
  try {
    ws = new WebSocket(url, ['taskflow.v1', `bearer.${state.token}`]);
  } catch {
    return scheduleReconnect();
  }
  state.ws = ws;
  ws.onmessage = (e) => {
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch {
      return;
    }
    state.lastMessageAt = Date.now();
    if (msg.type === 'hello') {
      state.wsAttempts = 0;
      setStatus('live');
      // Without a sequence to resume from, what happened before this socket is unknown: reload. At sign-in
      // too: a change between the list's read and this hello is in neither (its frame went to no socket).
      if (!resume) listChanged();
      // Resumed, a change whose reload failed is replayed by no frame: its list is read again now.
      reloadIfStale();
      if (state.sequence === null && msg.sequence !== null) state.sequence = msg.sequence;
    } else if (msg.type === 'task.changed') {
      if (state.sequence !== null && msg.sequence <= state.sequence) return;
      state.sequence = msg.sequence;
      state.flash.add(msg.task_id);
      listChanged();
      scheduleReload();
    } else if (msg.type === 'resync') {
      state.sequence = msg.sequence;
      listChanged();
      loadTasks();
    } else if (msg.type === 'notification') {
      pollNotifications(); // a new in-app notification: show it (and its toast) now
    }
  };
  ws.onopen = () => {
    clearInterval(state.pingTimer);
    state.lastMessageAt = Date.now();
    state.pingTimer = setInterval(() => checkAlive(ws), PING_MS);
  };
  ws.onclose = (e) => {
    // A socket given up on (reopen) closes late, when the browser's closing handshake times out (60 s): by
    // then its successor is live, and stopping the heartbeat here left the next drop unnoticed.
    if (state.ws !== ws) return;
    clearInterval(state.pingTimer);
    state.ws = null;
    setStatus('offline');
    // The gateway closes a socket whose token expired (1008): the session is over, and a reconnect with the
    // same token would be refused forever.
    if (e.code === 1008 && /expired|authenticated/i.test(e.reason)) return signOut(SESSION_EXPIRED);
    scheduleReconnect();
  };
}

/** A ping every PING_MS; a socket that has not answered anything for PONG_WAIT_MS after one is dead. */
const PING_MS = 25_000;
const PONG_WAIT_MS = 10_000;

/**
 * Pings the server; a socket silent since well before the last ping is given up and a new one opened (it
 * resumes from the last sequence). A dropped network (sleep, a lost Wi-Fi or NAT entry) closes nothing: the
 * board said "live" and missed every update.
 */
function checkAlive(ws) {
  if (state.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
  if (Date.now() - state.lastMessageAt > PING_MS + PONG_WAIT_MS) return reopen(ws);
  ws.send('{"type":"ping"}');
}

/** Gives up a silent socket (its close may never come) and opens another, which resumes from the sequence. */
function reopen(ws) {
  clearInterval(state.pingTimer);
  state.ws = null;
  ws.close();
  setStatus('offline');
  connect();
}

/** Back online, or the page shown again: check the socket now rather than at the next ping. */
function wakeUp() {
  if (!state.token) return;
  if (state.ws === null) return connect();
  const ws = state.ws;
  if (ws.readyState !== WebSocket.OPEN) return;
  const asked = Date.now();
  ws.send('{"type":"ping"}');
  setTimeout(() => {
    if (state.ws === ws && state.lastMessageAt < asked) reopen(ws);
  }, PONG_WAIT_MS);
}

function scheduleReconnect() {
  if (!state.token) return;
  // A refused upgrade (401) reaches the page only as a close: after a failed attempt, ask the API, whose 401
  // ends the session with its reason (an expired token). Offline, that fails too and the reconnects go on.
  if (state.wsAttempts > 0) api('GET', '/api/tasks/counts').catch(() => undefined);
  state.wsAttempts++;
  state.reconnectTimer = setTimeout(connect, backoffMs(state.wsAttempts, 500, 15_000));
}

/**
 * The wait before try `attempt` + 1 after as many failures in a row: `baseMs` doubled each time up to `capMs`,
 * less up to half at random (tabs that lost the server at once do not come back at once).
 */
function backoffMs(attempt, baseMs, capMs) {
  return Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30)) * (0.5 + Math.random() / 2);
}

function disconnect() {
  clearTimeout(state.reconnectTimer);
  clearInterval(state.pingTimer);
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close(1000, 'signed out');
  setStatus('offline');
}

// ---- notifications (optional service) ----------------------------------------------------------------

/** A short message; with `action`, a button on it (an undo) for as long as it shows. */
function toast(text, action) {
  const t = el(
    'div',
    { class: 'toast', role: 'status' },
    el('span', {}, text),
    action
      ? el(
          'button',
          {
            type: 'button',
            class: 'secondary',
            onclick: () => {
              t.remove();
              action.onclick();
            },
          },
          action.label,
        )
      : null,
  );
  $('#toasts').append(t);
  setTimeout(() => t.remove(), action ? 8000 : 6000);
}

async function pollNotifications() {
  let data;
  try {
    data = await api('GET', '/api/notifications');
  } catch (err) {
    if (err.status === 404) {
      clearInterval(state.notifTimer); // this server has no notifications service
      $('#notifications').hidden = true;
    }
    return;
  }
  const items = Array.isArray(data) ? data : (data && data.items) || [];
  $('#notifications').hidden = false;
  const first = !state.notifLoaded;
  state.notifLoaded = true;
  if (items.length === 0)
    return $('#notif-list').replaceChildren(el('li', { class: 'meta' }, 'No notifications yet.'));
  $('#notif-list').replaceChildren(
    ...items.slice(0, 20).map((n) => {
      const text = n.title || n.message || n.body || n.subject || JSON.stringify(n);
      const key = n.id || text;
      if (!state.notifSeen.has(key)) {
        state.notifSeen.add(key);
        if (!first) toast(text);
      }
      const when = n.created_at || n.sent_at || n.time;
      return el(
        'li',
        { class: n.read_at ? 'read' : 'unread', dataset: { id: n.id } },
        el('strong', {}, text),
        n.body && n.body !== text ? el('div', {}, n.body) : null,
        when ? el('div', { class: 'meta' }, new Date(when).toLocaleString()) : null,
        notificationActions(n),
      );
    }),
  );
}

/**
 * Mark read; snooze the reminder 10 minutes (it fires again then); dismiss it (no later delivery). Each marks
 * the notification read too: it has been dealt with.
 */
function notificationActions(n) {
  const reminder = `/api/tasks/${n.task_id}/reminders/${encodeURIComponent(n.reminder_id)}`;
  const act = (label, cls, fn) =>
    el(
      'button',
      {
        type: 'button',
        class: `secondary ${cls}`,
        onclick: async () => {
          try {
            await fn();
            if (!n.read_at) await api('POST', `/api/notifications/${n.id}/read`);
          } catch (err) {
            if (err.message !== 'unauthorized') showError(err.message);
          }
          await pollNotifications();
        },
      },
      label,
    );
  return el(
    'div',
    { class: 'row' },
    n.read_at ? null : act('Mark read', 'mark-read', async () => undefined),
    act('Snooze 10 min', 'snooze', async () => {
      await api('POST', `${reminder}/snooze`, { duration: 'PT10M' });
      toast('Snoozed: you will be reminded again in 10 minutes.');
    }),
    act('Dismiss', 'dismiss', () => api('POST', `${reminder}/dismiss`)),
  );
}

// ---- keyboard -----------------------------------------------------------------------------------------

/** n: new task, /: search, j/k: move the selection, x: complete or reopen it, e: edit it; not while typing. */
function onKey(e) {
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName || '');
  if (e.key === 'Escape' && typing) return document.activeElement.blur();
  if (typing || e.ctrlKey || e.metaKey || e.altKey || $('#board').hidden) return;
  const ids = state.tasks.map((t) => t.id);
  const at = ids.indexOf(state.selected);
  const select = (id) => {
    state.selected = id;
    for (const li of document.querySelectorAll('#tasks li.task'))
      li.classList.toggle('selected', li.dataset.id === id);
    document.querySelector(`#tasks li.task[data-id="${id}"]`)?.focus();
  };
  const selectedItem = () => document.querySelector(`#tasks li.task[data-id="${state.selected}"]`);
  if (e.key === 'n') {
    e.preventDefault();
    $('#new-title').focus();
  } else if (e.key === '/') {
    e.preventDefault();
    $('#f-search').focus();
  } else if ((e.key === 'j' || e.key === 'k') && ids.length) {
    const next = at < 0 ? 0 : Math.max(0, Math.min(ids.length - 1, at + (e.key === 'j' ? 1 : -1)));
    select(ids[next]);
  } else if (e.key === 'x' && selectedItem()) selectedItem().querySelector('.toggle')?.click();
  else if (e.key === 'e' && selectedItem()?.querySelector('.edit')) {
    e.preventDefault();
    selectedItem().querySelector('.edit').click();
  }
}

// ---- assistant ---------------------------------------------------------------------------------------

/** One line for a tool call: what it did and to which task. */
function toolLine(c) {
  const r = c.result && typeof c.result === 'object' ? c.result : {};
  const title = (r.task && r.task.title) || r.title || (c.arguments && c.arguments.title);
  return `${c.name.replace(/_/g, ' ')}${title ? `: ${title}` : ''}${c.is_error ? ' (failed)' : ''}`;
}

/** `**bold**`, `*emphasis*` and `` `code` `` of one line, as nodes (text stays text: nothing is parsed as HTML). */
function inlineMarkdown(line) {
  const nodes = [];
  let rest = line;
  for (let m = INLINE.exec(rest); m; m = INLINE.exec(rest)) {
    if (m.index > 0) nodes.push(rest.slice(0, m.index));
    const [whole, bold, code, em] = m;
    nodes.push(
      bold !== undefined
        ? el('strong', {}, bold)
        : code !== undefined
          ? el('code', {}, code)
          : el('em', {}, em),
    );
    rest = rest.slice(m.index + whole.length);
  }
  if (rest) nodes.push(rest);
  return nodes;
}
const INLINE = /\*\*([^*\n]+)\*\*|`([^`\n]+)`|\*([^*\s](?:[^*\n]*[^*\s])?)\*/;

/**
 * The markdown a model's reply uses, as DOM nodes built from text (never innerHTML): paragraphs, line
 * breaks, `-`/`*` and numbered lists, `#` headings (bold lines), and the inline marks above.
 */
function markdown(text) {
  const blocks = [];
  let list = null;
  let para = null;
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    const item = /^\s*(?:[-*•]|(\d+)[.)])\s+(.*)$/.exec(line);
    if (item) {
      const tag = item[1] === undefined ? 'ul' : 'ol';
      // A numbered list split by blank lines (as models write them) goes on at its own number.
      if (!list || list.tagName.toLowerCase() !== tag)
        blocks.push((list = el(tag, tag === 'ol' && item[1] !== '1' ? { start: item[1] } : {})));
      list.append(el('li', {}, inlineMarkdown(item[2])));
      para = null;
      continue;
    }
    list = null;
    if (!line.trim()) {
      para = null;
      continue;
    }
    const heading = /^#{1,6}\s+(.*)$/.exec(line);
    if (heading) {
      blocks.push(el('p', {}, el('strong', {}, inlineMarkdown(heading[1]))));
      para = null;
      continue;
    }
    if (para) para.append(el('br'), ...inlineMarkdown(line));
    else blocks.push((para = el('p', {}, inlineMarkdown(line))));
  }
  return blocks;
}

/** Shows `text` (the reply so far) in `answer`, drawn as markdown. */
function showReply(answer, text) {
  answer.dataset.text = text;
  answer.replaceChildren(...markdown(text));
}

function chatEvent(frame, answer) {
  const event = (/^event: (.+)$/m.exec(frame) || [])[1];
  const data = JSON.parse((/^data: (.+)$/m.exec(frame) || [])[1] || 'null');
  if (event === 'token') showReply(answer, (answer.dataset.text || '') + data.text);
  else if (event === 'tool_call')
    answer.before(el('li', { class: `chat-tool${data.is_error ? ' error' : ''}` }, toolLine(data)));
  else if (event === 'done') {
    rememberConversation(data.conversation_id);
    if (!answer.textContent) showReply(answer, data.reply);
  } else if (event === 'error') {
    rememberConversation(data.conversation_id || state.conversation);
    $('#chat-error').textContent = data.detail || 'The assistant failed';
    if (!answer.textContent) answer.remove();
  }
}

async function sendChat(e) {
  e.preventDefault();
  const input = $('#chat-input');
  const message = input.value.trim();
  if (!message) return;
  const send = $('#chat-form button[type=submit]');
  input.value = '';
  $('#chat-error').textContent = '';
  const log = $('#chat-log');
  const answer = el('li', { class: 'chat-assistant' });
  const question = el('li', { class: 'chat-user' }, message);
  log.append(question, answer);
  send.disabled = true;
  // Signed out (or in as someone else) while it was answered: its answer and its failure are no one's on the
  // page now (a late answer gave the next user the last one's conversation, a failure put the message in
  // their box).
  const signedInAs = state.token;
  const body = { message, ...(state.conversation ? { conversation_id: state.conversation } : {}) };
  // Whether its answer came (`done` or `error`): a stream that breaks after it lost nothing of it.
  let answered = false;
  try {
    const res = await fetch('/api/chat', {
      method: 'POST',
      headers: {
        authorization: `Bearer ${state.token}`,
        'content-type': 'application/json',
        accept: 'text/event-stream',
        // Sent again after the answer was lost, the message is answered what it was, its tools not run again.
        'idempotency-key': idempotencyKey('chatKey', body),
      },
      body: JSON.stringify(body),
    });
    if (state.token !== signedInAs) return;
    if (res.status === 401) return signOut('Your session expired; sign in again.');
    if (!res.ok || !(res.headers.get('content-type') || '').startsWith('text/event-stream')) {
      const problem = await res.json().catch(() => null);
      answer.remove();
      // Not taken (busy, rate limited, refused): the message goes back in the box, to send again.
      question.remove();
      if (!input.value) input.value = message;
      $('#chat-error').textContent = (problem && problem.detail) || `The assistant answered ${res.status}`;
      return;
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      // Signed out (or in as someone else) meanwhile: this answer belongs to no one on the page now.
      if (done || state.token !== signedInAs) break;
      buffer += value;
      for (let i = buffer.indexOf('\n\n'); i >= 0; i = buffer.indexOf('\n\n')) {
        if (/^event: (done|error)$/m.test(buffer.slice(0, i))) answered = true;
        chatEvent(buffer.slice(0, i), answer);
        buffer = buffer.slice(i + 2);
      }
      log.scrollTop = log.scrollHeight;
    }
    if (state.token === signedInAs) state.chatKey = null;
  } catch (err) {
    if (state.token !== signedInAs) return;
    // Answered, and only the stream's end was lost: the message is not sent again (with the conversation it
    // made, it would be another body, another key: its tools run again).
    if (answered) {
      state.chatKey = null;
      return;
    }
    $('#chat-error').textContent = `The assistant cannot be reached (${err.message}); send it again`;
    if (!answer.textContent) answer.remove();
    // Not known to be answered: it goes back in the box, and sent again as it is, with its key.
    if (!answer.isConnected) question.remove();
    if (!input.value) input.value = message;
  } finally {
    send.disabled = false;
  }
}

function newConversation() {
  rememberConversation(null);
  $('#chat-log').replaceChildren();
  showEarlier(null);
  $('#chat-error').textContent = '';
}

/** `<this>.<user>`: the assistant's conversation, continued after a reload. */
const CONVERSATION_KEY = 'taskflow.conversation';
const conversationKey = () => `${CONVERSATION_KEY}.${subjectOf(state.token)}`;

function rememberConversation(id) {
  state.conversation = id;
  if (!state.token) return;
  if (id) localStorage.setItem(conversationKey(), id);
  else localStorage.removeItem(conversationKey());
}

/** The words of stored messages as the log shows them (text, never HTML): the user's, and the replies. */
function chatItems(messages) {
  const items = [];
  for (const m of messages)
    if (m.role === 'user') items.push(el('li', { class: 'chat-user' }, m.content));
    else if (m.role === 'assistant' && m.content) {
      const answer = el('li', { class: 'chat-assistant' });
      showReply(answer, m.content);
      items.push(answer);
    }
  return items;
}

/**
 * The "Earlier messages" button above the log while the conversation has messages before those shown (`cursor`:
 * the shown page's next_cursor); none for null. The conversation is read a page at a time: one used for months
 * holds thousands of messages, and all of them were loaded and drawn at each reload.
 */
function showEarlier(cursor) {
  let button = $('#chat-earlier');
  if (!cursor) return button?.remove();
  if (!button) {
    button = el('button', { id: 'chat-earlier', type: 'button', onclick: loadEarlier }, 'Earlier messages');
    $('#chat-log').before(button);
  }
  button.dataset.cursor = cursor;
  button.disabled = false;
}

/** The page before those shown, put above them; the messages read stay where they are on the screen. */
async function loadEarlier() {
  const button = $('#chat-earlier');
  const id = state.conversation;
  if (!button || !id) return;
  button.disabled = true;
  try {
    const query = new URLSearchParams({ cursor: button.dataset.cursor });
    const page = await api('GET', `/api/chat/conversations/${id}?${query}`);
    // Another conversation (a new one, another user's) is shown meanwhile: this page is not of it.
    if (state.conversation !== id || !button.isConnected) return;
    const log = $('#chat-log');
    const below = log.scrollHeight - log.scrollTop;
    log.prepend(...chatItems(page.messages));
    log.scrollTop = log.scrollHeight - below;
    showEarlier(page.next_cursor);
  } catch (err) {
    if (state.conversation !== id) return;
    button.disabled = false;
    $('#chat-error').textContent = `The earlier messages could not be loaded (${err.message})`;
  }
}

/**
 * After a reload: the conversation that was open, its last messages shown again (a new one when it is gone), and
 * the earlier ones on asking (showEarlier).
 */
async function restoreConversation() {
  showEarlier(null);
  const id = localStorage.getItem(conversationKey());
  if (!id) return;
  try {
    const page = await api('GET', `/api/chat/conversations/${id}`);
    state.conversation = id;
    const log = $('#chat-log');
    log.append(...chatItems(page.messages));
    showEarlier(page.next_cursor);
    log.scrollTop = log.scrollHeight;
  } catch (err) {
    if (err.status === 404) localStorage.removeItem(conversationKey()); // deleted, or no chat served here
  }
}

// ---- session -----------------------------------------------------------------------------------------

function signIn(token) {
  state.token = token.trim();
  localStorage.setItem(TOKEN_KEY, state.token);
  $('#signin').hidden = true;
  $('#board').hidden = false;
  $('#chat').hidden = false;
  $('#signout').hidden = false;
  $('#whoami').textContent = subjectOf(state.token) || '';
  state.sequence = null;
  state.staleSince = null; // the last user's list, read or not, is not this one's
  state.reloadAttempts = 0;
  state.wsAttempts = 0;
  state.notifLoaded = false;
  state.notifSeen.clear();
  setView(state.view); // loads the list
  void offerZone();
  void restoreConversation();
  connect();
  pollNotifications();
  clearInterval(state.notifTimer);
  state.notifTimer = setInterval(pollNotifications, 30_000);
}

/**
 * Today, Upcoming, "tomorrow" and repeats are read in the zone of the user's settings (UTC until set): when
 * this browser is in another, the board offers it (until taken or kept). Unset, a person in Los Angeles saw
 * tomorrow's 6 am task under Today.
 */
async function offerZone() {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const offer = $('#zone-offer');
  offer.hidden = true;
  if (!zone || localStorage.getItem(`${ZONE_KEPT_KEY}.${subjectOf(state.token)}`) === zone) return;
  try {
    const settings = await api('GET', '/api/me/settings');
    if (sameZone(settings.timezone, zone)) return;
    $('#zone-offer-text').textContent =
      `Today, Upcoming and repeats are read in ${settings.timezone}, and this browser is in ${zone}.`;
    $('#zone-use').textContent = `Use ${zone}`;
    $('#zone-use').onclick = () =>
      run(async () => {
        await api('PUT', '/api/me/settings', { timezone: zone });
        offer.hidden = true;
        await loadTasks();
      });
    $('#zone-keep').onclick = () => {
      localStorage.setItem(`${ZONE_KEPT_KEY}.${subjectOf(state.token)}`, zone);
      offer.hidden = true;
    };
    offer.hidden = false;
  } catch {
    // settings not served here (the api target runs elsewhere): nothing to offer
  }
}

/** Asia/Kolkata and Asia/Calcutta are one zone under two names: compared as the browser names them. */
function sameZone(a, b) {
  const canonical = (zone) => {
    try {
      return Intl.DateTimeFormat(undefined, { timeZone: zone }).resolvedOptions().timeZone;
    } catch {
      return zone; // a name this browser does not know
    }
  };
  return canonical(a) === canonical(b);
}

/** On a development server (GET /api/dev/sign-in answers), "continue as <name>" mints a token. */
async function offerDevSignIn() {
  const res = await fetch('/api/dev/sign-in').catch(() => null);
  $('#dev-signin').hidden = !(res && res.ok);
}

async function devSignIn(e) {
  e.preventDefault();
  const user = $('#dev-user').value.trim();
  const res = await fetch('/api/dev/sign-in', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user }),
  }).catch(() => null);
  const data = res ? await res.json().catch(() => null) : null;
  if (!res || !res.ok || !data || !data.token) {
    $('#dev-signin-error').textContent =
      res && res.status === 400
        ? 'A name is letters, digits and . _ @ - (up to 100), starting with a letter or digit.'
        : 'Development sign-in is not available.';
    return;
  }
  $('#dev-signin-error').textContent = '';
  signIn(data.token);
}

function signOut(reason) {
  state.token = '';
  state.createKey = null;
  state.chatKey = null;
  forgetBoard();
  showBusy(null);
  localStorage.removeItem(TOKEN_KEY);
  disconnect();
  clearInterval(state.notifTimer);
  $('#board').hidden = true;
  $('#chat').hidden = true;
  newConversation();
  $('#notifications').hidden = true;
  $('#signout').hidden = true;
  $('#whoami').textContent = '';
  $('#signin').hidden = false;
  $('#signin-error').textContent = reason || '';
  void offerDevSignIn();
}

/**
 * What was the signed-in user's on the board: the list and its counts, an open edit form, the toasts (an Undo
 * among them). Kept, the next user in this tab was shown them, and an Undo pressed then wrote into their account.
 */
function forgetBoard() {
  state.editing = false;
  state.tasks = [];
  state.nextCursor = null;
  $('#tasks').replaceChildren();
  for (const count of document.querySelectorAll('#views [data-count]')) count.textContent = '';
  $('#toasts').replaceChildren();
}

function init() {
  $('#signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('#token').value.trim();
    if (token) signIn(token);
  });
  $('#signout').addEventListener('click', () => signOut());
  $('#dev-signin').addEventListener('submit', devSignIn);
  $('#dev-user').addEventListener(
    'input',
    () => ($('#dev-user-label').textContent = $('#dev-user').value.trim()),
  );
  $('#create-form').addEventListener('submit', createTask);
  $('#chat-form').addEventListener('submit', sendChat);
  $('#chat-new').addEventListener('click', newConversation);
  $('#filters').addEventListener('submit', (e) => e.preventDefault());
  $('#board-error-close').addEventListener('click', dismissError);
  for (const b of document.querySelectorAll('#views button'))
    b.addEventListener('click', () => setView(b.dataset.view));
  document.addEventListener('keydown', onKey);
  for (const id of ['#f-status', '#f-priority', '#f-sort']) $(id).addEventListener('change', loadTasks);
  for (const id of ['#f-tag', '#f-search']) $(id).addEventListener('input', scheduleReload);
  window.addEventListener('online', () => {
    wakeUp();
    reloadIfStale();
  });
  document.addEventListener('visibilitychange', () => document.visibilityState === 'visible' && wakeUp());
  // Signed out, or in as someone else, in another tab: this one follows (it must not go on as the old user).
  window.addEventListener('storage', (e) => {
    if (e.key !== TOKEN_KEY || (e.newValue || '') === state.token) return;
    if (!e.newValue) return signOut('Signed out in another tab.');
    disconnect(); // the socket and the conversation were the other user's
    state.conversation = null;
    $('#chat-log').replaceChildren();
    forgetBoard();
    signIn(e.newValue);
  });
  $('#more').addEventListener('click', loadMore);
  if (state.token) signIn(state.token);
  else void offerDevSignIn();
}

init();
