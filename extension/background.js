// The service worker: the only part that holds the card service's address
// and token, and the only one that talks to the card service. Content
// scripts (on bank pages) and the extension's pages ask it by message.
//
// Storage: chrome.storage.local holds {serviceUrl, token, userAdapters};
// it is closed to content scripts (setAccessLevel below), so only the
// extension's own pages and this worker can read it. chrome.storage.session
// holds what happened per tab (status, challenges already answered) and the
// recent activity the popup shows; it is gone when the browser closes.
import { adapterFor, checkAdapters, permissionOrigin } from './lib.js';

const USER_SCRIPT_ID = 'bankbridge-user-adapters';
const RECENT_MAX = 20;
const SEEN_MAX = 50;
const LIST_TIMEOUT_MS = 15000;
// serve waits up to 30 s (--reader-wait) for a busy reader, then the card works.
const CODE_TIMEOUT_MS = 90000;

const lockStorage = () =>
  chrome.storage.local.setAccessLevel({ accessLevel: 'TRUSTED_CONTEXTS' }).catch(() => {});
lockStorage();

let shippedCache = null;
async function shippedAdapters() {
  if (!shippedCache) {
    const res = await fetch(chrome.runtime.getURL('adapters.json'));
    const { adapters, errors } = checkAdapters(await res.json());
    if (errors.length) console.error('adapters.json:', errors);
    shippedCache = adapters;
  }
  return shippedCache;
}

async function userAdapters() {
  const { userAdapters: stored } = await chrome.storage.local.get('userAdapters');
  return checkAdapters(stored ?? []).adapters;
}

async function settings() {
  const { serviceUrl, token } = await chrome.storage.local.get(['serviceUrl', 'token']);
  return { serviceUrl: serviceUrl || null, token: token || null };
}

// ---- content scripts for the user's own adapters --------------------------

/** Register one content script over every user adapter's patterns that the
 * user granted (the shipped adapters' scripts are in the manifest). */
async function syncUserScripts() {
  const adapters = await userAdapters();
  const wanted = [];
  for (const p of [...new Set(adapters.flatMap((a) => a.matches))]) {
    if (await chrome.permissions.contains({ origins: [permissionOrigin(p)] }).catch(() => false)) wanted.push(p);
  }
  const existing = await chrome.scripting.getRegisteredContentScripts({ ids: [USER_SCRIPT_ID] });
  if (existing.length) await chrome.scripting.unregisterContentScripts({ ids: [USER_SCRIPT_ID] });
  if (wanted.length) {
    await chrome.scripting.registerContentScripts([{
      id: USER_SCRIPT_ID,
      matches: wanted,
      js: ['content.js'],
      runAt: 'document_idle',
      allFrames: false,
      persistAcrossSessions: true,
    }]);
  }
  return wanted;
}

chrome.runtime.onInstalled.addListener(() => {
  lockStorage();
  syncUserScripts().catch((e) => console.error('registering content scripts:', e));
});
chrome.runtime.onStartup.addListener(() => {
  syncUserScripts().catch((e) => console.error('registering content scripts:', e));
});
chrome.permissions.onRemoved.addListener(() => {
  syncUserScripts().catch((e) => console.error('registering content scripts:', e));
});
chrome.tabs.onRemoved.addListener((tabId) => {
  chrome.storage.session.remove([`tab:${tabId}`, `seen:${tabId}`]);
});

// ---- status per tab and recent activity -----------------------------------

// `idle` (a matching page without a challenge) only updates the tab's line.
async function record(tabId, status) {
  const entry = { ...status, at: new Date().toISOString() };
  if (entry.state === 'idle') {
    await chrome.storage.session.set({ [`tab:${tabId}`]: entry, lastTab: tabId });
    return;
  }
  const { recent = [] } = await chrome.storage.session.get('recent');
  recent.unshift(entry);
  await chrome.storage.session.set({ [`tab:${tabId}`]: entry, lastTab: tabId, recent: recent.slice(0, RECENT_MAX) });
}

/** Mark `key` as answered in this tab; false if it already was. */
async function claim(tabId, key, force) {
  const name = `seen:${tabId}`;
  const { [name]: seen = [] } = await chrome.storage.session.get(name);
  if (seen.includes(key) && !force) return false;
  await chrome.storage.session.set({ [name]: [key, ...seen.filter((k) => k !== key)].slice(0, SEEN_MAX) });
  return true;
}

// ---- the card service ------------------------------------------------------

class Failure extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

async function call(serviceUrl, token, method, path, body, timeoutMs) {
  let res;
  try {
    res = await fetch(`${serviceUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        accept: 'application/json',
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
      credentials: 'omit',
      cache: 'no-store',
      redirect: 'error',
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (e) {
    if (e && e.name === 'TimeoutError') {
      throw new Failure('timeout', `The card service at ${serviceUrl} did not answer within ${Math.round(timeoutMs / 1000)} s.`);
    }
    throw new Failure('unreachable', `Cannot reach the card service at ${serviceUrl}: is bankbridge serve running there, and is the address in the options right?`);
  }
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  return { status: res.status, json };
}

/** Words for an error answer of the card service. `card` is the card view, if known. */
function explain(status, json, card) {
  const code = json && typeof json.code === 'string' ? json.code : '';
  const apiMessage = json && typeof json.message === 'string' ? json.message : '';
  const which = card ? `Card ····${last4(card.masked_pan)} (${card.label})` : 'The card';
  const reader = card ? ` "${card.reader}"` : '';
  if (status === 401) {
    return new Failure('token_refused', `The card service refused the token (${code || status}): it is unknown, revoked or expired. Create one with "bankbridge token create --scope write --name …" and save it in the extension's options.`);
  }
  if (status === 403) {
    return new Failure('token_scope', 'The token may not compute card codes: it needs scope write ("bankbridge token create --scope write --name …").');
  }
  switch (code) {
    case 'card_disabled':
      return new Failure('card_disabled', `${which} is disabled in bankbridge${card?.status_reason ? ` (${card.status_reason})` : ''}. Nothing was filled in. An administrator can enable it again on bankbridge's Cards page.`);
    case 'card_blocked':
      return new Failure('card_blocked', `${which} is blocked (its PIN is blocked on the card). Nothing was filled in. Unblock it at the bank, then register it again.`);
    case 'wrong_pin':
      return new Failure('wrong_pin', `${which} refused the PIN stored in bankbridge, so bankbridge disabled it. An administrator must set the right PIN before it is used again.`);
    case 'pin_tries_low':
      return new Failure('pin_tries_low', `${which} has too few PIN tries left, so bankbridge did not send the PIN. Nothing was filled in.`);
    case 'pin_outcome_unknown':
      return new Failure('pin_outcome_unknown', `${which}: its answer to the PIN was lost, so bankbridge disabled the card until an administrator sets its PIN again. Nothing was filled in.`);
    case 'wrong_card':
      return new Failure('wrong_card', `Another card is in the reader${reader} than the one registered. Nothing was filled in.`);
    case 'reader_busy':
      return new Failure('reader_busy', `The card reader${reader} is busy with another code. Try again in a moment.`);
    case 'no_card':
    case 'card_removed':
      return new Failure('no_card', `There is no card in the reader${reader} (or it was pulled out). Put it back and try again.`);
    case 'reader_offline':
      return new Failure('reader_offline', `The card reader${reader} is offline: ${card?.host ? `the card host "${card.host}" is` : 'its card host is'} not connected to the card service (is "bankbridge card agent" running there?). Nothing was filled in; try again once it is back.`);
    case 'reader_unavailable':
      return new Failure('reader_unavailable', `The card service cannot reach the card reader${reader} (its USB cable, or pcscd on that computer). Nothing was filled in; try again once it is back.`);
    case 'not_found':
      return new Failure('not_found', `The card service no longer knows this card: ${apiMessage || 'not found'}.`);
    default:
      break;
  }
  if (status === 429 || status === 503) {
    return new Failure('reader_busy', `The card service is busy (${code || status}): ${apiMessage || 'try again in a moment'}.`);
  }
  if (status === 409) {
    return new Failure('card_unusable', `The card cannot be used now (${code}): ${apiMessage}`);
  }
  return new Failure('service_error', `The card service answered ${status}${code ? ` ${code}` : ''}${apiMessage ? `: ${apiMessage}` : ''}.`);
}

const last4 = (masked) => (typeof masked === 'string' ? masked.replace(/\D/g, '').slice(-4) : '');

/** The one registered card whose number ends like `cardNumber`'s. */
async function findCard(s, cardNumber, institutionName) {
  const end = cardNumber.slice(-4);
  const list = await call(s.serviceUrl, s.token, 'GET', '/api/v1/financial-institutions', null, LIST_TIMEOUT_MS);
  if (list.status !== 200) throw explain(list.status, list.json, null);
  let institutions = Array.isArray(list.json?.data) ? list.json.data : [];
  if (institutionName) {
    institutions = institutions.filter((i) => i.name === institutionName);
    if (!institutions.length) {
      throw new Failure('no_institution', `bankbridge has no financial institution named "${institutionName}" (the adapter's "institution").`);
    }
  }
  const found = [];
  for (const inst of institutions) {
    const cards = await call(s.serviceUrl, s.token, 'GET', `/api/v1/financial-institutions/${encodeURIComponent(inst.id)}/cards`, null, LIST_TIMEOUT_MS);
    if (cards.status !== 200) throw explain(cards.status, cards.json, null);
    for (const c of cards.json?.data ?? []) {
      if (last4(c.masked_pan) === end) found.push({ ...c, institution_name: inst.name });
    }
  }
  if (found.length === 0) {
    throw new Failure('no_card_registered', `No card ending in ${end} is registered in bankbridge${institutionName ? ` under ${institutionName}` : ''}. An administrator registers it on bankbridge's Cards page.`);
  }
  if (found.length > 1) {
    const names = found.map((c) => `${c.label} (${c.institution_name})`).join(', ');
    throw new Failure('several_cards', `Several registered cards end in ${end}: ${names}. Name the institution in the site adapter ("institution") so one is left.`);
  }
  return found[0];
}

async function computeCode(adapter, ask) {
  const s = await settings();
  if (!s.serviceUrl || !s.token) {
    throw new Failure('not_configured', 'Set the card service\'s address and a write token in the extension\'s options first.');
  }
  const digits = String(ask.cardNumber ?? '').replace(/\D/g, '');
  if (digits.length < 4) throw new Failure('no_card_number', 'The page shows no card number to find the card by.');
  const card = await findCard(s, digits, adapter.institution);
  const path = `/api/v1/financial-institutions/${encodeURIComponent(card.institution_id)}/cards/${encodeURIComponent(card.id)}`;
  const answer = ask.mode === 'sign'
    ? await call(s.serviceUrl, s.token, 'POST', `${path}/signs`, { challenges: ask.challenges }, CODE_TIMEOUT_MS)
    : await call(s.serviceUrl, s.token, 'POST', `${path}/logins`, ask.challenges[0] ? { challenge: ask.challenges[0] } : {}, CODE_TIMEOUT_MS);
  if (answer.status !== 200) throw explain(answer.status, answer.json, card);
  const code = answer.json?.response;
  if (typeof code !== 'string' || !/^\d{1,20}$/.test(code)) {
    throw new Failure('service_error', 'The card service answered without a code.');
  }
  return { code, card: { label: card.label, last4: last4(card.masked_pan) } };
}

// ---- messages ---------------------------------------------------------------

const EXTENSION_ORIGIN = new URL(chrome.runtime.getURL('/')).origin;
const fromExtensionPage = (sender) => {
  try {
    return sender.id === chrome.runtime.id && new URL(sender.url).origin === EXTENSION_ORIGIN;
  } catch {
    return false;
  }
};
const checkChallenges = (mode, list) =>
  Array.isArray(list) && list.length >= (mode === 'sign' ? 1 : 0) && list.length <= (mode === 'sign' ? 10 : 1)
  && list.every((c) => typeof c === 'string' && /^\d{1,16}$/.test(c) && (mode !== 'sign' || c.length <= 10));

async function pageAdapter(sender) {
  if (!sender.tab || sender.frameId !== 0 || !sender.url) return null;
  return adapterFor(sender.url, await userAdapters(), await shippedAdapters());
}

const handlers = {
  // From content scripts (bank pages): the adapter for this page.
  async adapter(msg, sender) {
    const adapter = await pageAdapter(sender);
    return { adapter };
  },
  // From content scripts: compute the code for the challenge on this page.
  async compute(msg, sender) {
    const adapter = await pageAdapter(sender);
    if (!adapter) return { ok: false, kind: 'no_adapter', message: 'No site adapter matches this page.' };
    const mode = msg.mode === 'sign' ? 'sign' : 'login';
    if (!checkChallenges(mode, msg.challenges)) {
      return { ok: false, kind: 'bad_challenge', message: 'The challenge on the page is not numbers a card reader takes.' };
    }
    const page = new URL(sender.url);
    const key = `${page.origin}${page.pathname} ${mode} ${msg.challenges.join(',')}`;
    if (!(await claim(sender.tab.id, key, msg.force === true))) {
      return { ok: false, kind: 'repeat', message: 'This challenge was answered once already on this page; the card is not asked again for it.' };
    }
    const base = { site: adapter.name, page: `${page.origin}${page.pathname}`, mode };
    try {
      // The content script reports the filled code's outcome itself.
      const got = await computeCode(adapter, { mode, cardNumber: msg.cardNumber, challenges: msg.challenges });
      return { ok: true, ...got };
    } catch (e) {
      const kind = e instanceof Failure ? e.kind : 'internal';
      const message = e instanceof Failure ? e.message : `Unexpected failure: ${e}`;
      await record(sender.tab.id, { ...base, state: 'error', kind, text: message });
      return { ok: false, kind, message };
    }
  },
  // From content scripts: what the page shows now (filled, submitted, waiting).
  async status(msg, sender) {
    if (!sender.tab) return {};
    const adapter = await pageAdapter(sender);
    if (!adapter) return {};
    const page = new URL(sender.url);
    const text = String(msg.text ?? '').slice(0, 500);
    const state = ['idle', 'working', 'done', 'error'].includes(msg.state) ? msg.state : 'idle';
    await record(sender.tab.id, { site: adapter.name, page: `${page.origin}${page.pathname}`, state, kind: String(msg.kind ?? ''), text });
    return {};
  },
  // From the extension's pages only below.
  async settings() {
    const s = await settings();
    const { userAdapters: stored } = await chrome.storage.local.get('userAdapters');
    return {
      serviceUrl: s.serviceUrl,
      tokenSaved: Boolean(s.token),
      userAdapters: stored ?? [],
      shipped: await shippedAdapters(),
      registered: (await chrome.scripting.getRegisteredContentScripts({ ids: [USER_SCRIPT_ID] }))[0]?.matches ?? [],
    };
  },
  async syncScripts() {
    return { registered: await syncUserScripts() };
  },
  async test() {
    const s = await settings();
    if (!s.serviceUrl || !s.token) return { ok: false, message: 'Save the card service\'s address and a token first.' };
    try {
      const list = await call(s.serviceUrl, s.token, 'GET', '/api/v1/financial-institutions', null, LIST_TIMEOUT_MS);
      if (list.status !== 200) throw explain(list.status, list.json, null);
      let cards = 0;
      for (const inst of list.json?.data ?? []) {
        const c = await call(s.serviceUrl, s.token, 'GET', `/api/v1/financial-institutions/${encodeURIComponent(inst.id)}/cards`, null, LIST_TIMEOUT_MS);
        if (c.status !== 200) throw explain(c.status, c.json, null);
        cards += (c.json?.data ?? []).filter((x) => x.masked_pan).length;
      }
      // The API cannot tell a token's scope; a login on a card that does not
      // exist can: 404 passed the write check, 403 did not. No card is used.
      const probe = await call(s.serviceUrl, s.token, 'POST', '/api/v1/financial-institutions/-/cards/-/logins', {}, LIST_TIMEOUT_MS);
      const institutions = list.json?.data?.length ?? 0;
      const seen = `${institutions} financial institution(s), ${cards} card(s) with a card number`;
      if (probe.status === 403) {
        return { ok: false, message: `Connected to ${s.serviceUrl} (${seen}), but the token may not compute codes: it needs scope write.` };
      }
      return { ok: true, message: `Connected to ${s.serviceUrl}: ${seen}. The token may compute codes.` };
    } catch (e) {
      return { ok: false, message: e instanceof Failure ? e.message : String(e) };
    }
  },
  // The popup: the status of tab `tabId` (or, with none, of the tab that
  // reported last), the recent activity and whether the service is set up.
  async tabStatus(msg) {
    const { lastTab, recent = [] } = await chrome.storage.session.get(['lastTab', 'recent']);
    const tabId = Number.isInteger(msg.tabId) ? msg.tabId : lastTab;
    const name = `tab:${tabId}`;
    const got = await chrome.storage.session.get(name);
    const s = await settings();
    return { tab: got[name] ?? null, recent, serviceUrl: s.serviceUrl, tokenSaved: Boolean(s.token) };
  },
};
const FROM_PAGES = new Set(['adapter', 'compute', 'status']);

chrome.runtime.onMessage.addListener((msg, sender, reply) => {
  const type = msg && typeof msg.type === 'string' ? msg.type : '';
  const handler = Object.hasOwn(handlers, type) ? handlers[type] : null;
  if (!handler || sender.id !== chrome.runtime.id || (!FROM_PAGES.has(type) && !fromExtensionPage(sender))) {
    reply({ ok: false, kind: 'refused', message: 'unknown or refused message' });
    return false;
  }
  handler(msg, sender).then(reply, (e) => reply({ ok: false, kind: 'internal', message: String(e) }));
  return true;
});
