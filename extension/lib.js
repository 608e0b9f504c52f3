// Shared by the service worker, the options page and the popup (never by
// the content script, which is a classic script and gets what it needs by
// message): site adapters (checking them, matching page addresses against
// their patterns) and the card service's address.

export const MODES = ['login', 'sign', 'detect'];
const SELECTOR_KEYS = ['cardNumber', 'challenge', 'signNumbers', 'response', 'submit'];
const ADAPTER_KEYS = ['name', 'matches', 'mode', 'selectors', 'submit', 'institution'];

// A match pattern as Chrome reads them, narrowed to what an adapter may
// name: https pages anywhere, plain http only on this computer. No port:
// Chrome's patterns match every port of a host.
const PATTERN = /^(https|http):\/\/(\*|\*\.[a-z0-9.-]+|[a-z0-9.-]+)(\/.*)$/;
const LOOPBACK_HOSTS = ['127.0.0.1', 'localhost'];

/** Why `pattern` is not one an adapter may use, or null when it is fine. */
export function patternProblem(pattern) {
  if (typeof pattern !== 'string' || pattern.length === 0) return 'a pattern must be a non-empty string';
  if (pattern.length > 300) return `${pattern.slice(0, 40)}…: a pattern is at most 300 characters`;
  const m = PATTERN.exec(pattern);
  if (!m) {
    if (/^[a-z*]+:\/\/[^/]*:\d+/.test(pattern)) {
      return `${pattern}: leave the port out (a pattern without one matches every port)`;
    }
    return `${pattern}: not a match pattern like https://bank.example/login/*`;
  }
  const [, scheme, host] = m;
  if (scheme === 'http' && !LOOPBACK_HOSTS.includes(host)) {
    return `${pattern}: plain http only for 127.0.0.1 or localhost; a bank's site is https`;
  }
  if (host === '*') return `${pattern}: name the bank's host, not every host`;
  return null;
}

/** Does page address `url` match Chrome match pattern `pattern`? */
export function matchesPattern(pattern, url) {
  const m = PATTERN.exec(pattern);
  if (!m) return false;
  let u;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  const [, scheme, host, path] = m;
  if (u.protocol !== `${scheme}:`) return false;
  const hostname = u.hostname.toLowerCase();
  if (host.startsWith('*.')) {
    const base = host.slice(2);
    if (hostname !== base && !hostname.endsWith(`.${base}`)) return false;
  } else if (host !== '*' && hostname !== host) {
    return false;
  }
  const glob = path.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*');
  return new RegExp(`^${glob}$`).test(u.pathname + u.search);
}

/**
 * Check a list of adapters. `selectorOk(sel)` says whether a CSS selector
 * parses (the options page passes one that asks the DOM; the service
 * worker has no DOM). Returns {adapters, errors}: `errors` lists what is
 * wrong, each naming the adapter and field.
 */
export function checkAdapters(value, selectorOk = () => true) {
  const errors = [];
  let list = value;
  if (list && !Array.isArray(list) && typeof list === 'object' && Array.isArray(list.adapters)) {
    list = list.adapters;
  }
  if (!Array.isArray(list)) {
    return { adapters: [], errors: ['give a JSON list of adapters: [ {"name": …}, … ] (or {"adapters": [ … ]})'] };
  }
  if (list.length > 50) errors.push('at most 50 adapters');
  const names = new Set();
  const adapters = [];
  list.forEach((a, i) => {
    const where = `adapter ${i + 1}${a && typeof a.name === 'string' && a.name ? ` (${a.name})` : ''}`;
    const bad = (msg) => errors.push(`${where}: ${msg}`);
    if (!a || typeof a !== 'object' || Array.isArray(a)) {
      bad('must be an object');
      return;
    }
    for (const k of Object.keys(a)) {
      if (!ADAPTER_KEYS.includes(k)) bad(`unknown field "${k}" (fields: ${ADAPTER_KEYS.join(', ')})`);
    }
    if (typeof a.name !== 'string' || !a.name.trim() || a.name.length > 100) {
      bad('"name" must be 1 to 100 characters');
    } else if (names.has(a.name.trim())) {
      bad('another adapter has this name');
    } else {
      names.add(a.name.trim());
    }
    if (!Array.isArray(a.matches) || a.matches.length === 0 || a.matches.length > 20) {
      bad('"matches" must be a list of 1 to 20 match patterns');
    } else {
      for (const p of a.matches) {
        const problem = patternProblem(p);
        if (problem) bad(`"matches": ${problem}`);
      }
    }
    const mode = a.mode ?? 'detect';
    if (!MODES.includes(mode)) bad(`"mode" must be one of ${MODES.join(', ')}`);
    if (a.submit !== undefined && typeof a.submit !== 'boolean') bad('"submit" must be true or false');
    if (a.institution !== undefined && (typeof a.institution !== 'string' || !a.institution.trim())) {
      bad('"institution", when given, is the name of a financial institution in bankbridge');
    }
    const s = a.selectors;
    if (!s || typeof s !== 'object' || Array.isArray(s)) {
      bad('"selectors" must be an object');
      return;
    }
    for (const k of Object.keys(s)) {
      if (!SELECTOR_KEYS.includes(k)) bad(`unknown selector "${k}" (selectors: ${SELECTOR_KEYS.join(', ')})`);
    }
    // In mode login, no challenge selector means a code without challenge
    // (M1 over nothing); detect tells the pages apart by these two.
    const needed = ['cardNumber', 'response'];
    if (mode === 'detect') needed.push('challenge', 'signNumbers');
    if (mode === 'sign') needed.push('signNumbers');
    for (const k of needed) {
      if (s[k] === undefined) bad(`selectors."${k}" is needed in mode ${mode}`);
    }
    for (const k of SELECTOR_KEYS) {
      if (s[k] === undefined) continue;
      if (typeof s[k] !== 'string' || !s[k].trim() || s[k].length > 500) {
        bad(`selectors."${k}" must be a CSS selector`);
      } else if (!selectorOk(s[k])) {
        bad(`selectors."${k}": ${s[k]} is not a valid CSS selector`);
      }
    }
    adapters.push({
      name: String(a.name ?? '').trim(),
      matches: Array.isArray(a.matches) ? [...a.matches] : [],
      mode,
      selectors: { ...s },
      submit: a.submit === true,
      ...(a.institution ? { institution: a.institution.trim() } : {}),
    });
  });
  return { adapters: errors.length ? [] : adapters, errors };
}

/** The first adapter (of `lists`, in order) one of whose patterns matches `url`. */
export function adapterFor(url, ...lists) {
  for (const list of lists) {
    for (const a of list) {
      if (a.matches.some((p) => matchesPattern(p, url))) return a;
    }
  }
  return null;
}

/**
 * The card service's address as typed, checked: https anywhere, plain
 * http only on this computer (the token travels in every request).
 * Returns {url} (no trailing slash) or {error}.
 */
export function checkServiceUrl(text) {
  let u;
  try {
    u = new URL(String(text ?? '').trim());
  } catch {
    return { error: 'Give the card service\'s address, e.g. http://127.0.0.1:8080' };
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') {
    return { error: 'The address must start with https:// (or http:// on this computer)' };
  }
  if (u.protocol === 'http:' && !LOOPBACK_HOSTS.includes(u.hostname)) {
    return { error: 'Plain http only to 127.0.0.1 or localhost: the token must not cross a network unencrypted. Use https for another host.' };
  }
  if (u.username || u.password || u.search || u.hash) {
    return { error: 'The address takes no user name, query or fragment' };
  }
  return { url: `${u.origin}${u.pathname.replace(/\/+$/, '')}` };
}

/** The host-permission pattern a card service address needs. */
export function originPattern(serviceUrl) {
  const u = new URL(serviceUrl);
  return `${u.protocol}//${u.hostname}/*`;
}

/** The host permission a page pattern needs (Chrome grants hosts, not paths). */
export function permissionOrigin(pattern) {
  const m = PATTERN.exec(pattern);
  return m ? `${m[1]}://${m[2]}/*` : pattern;
}
