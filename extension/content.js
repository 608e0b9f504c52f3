// The content script, on pages a site adapter matches. It reads the card
// number and the challenge the bank shows, asks the service worker for the
// code (it never sees the card service's token, never reads a PIN), fills
// the response field and, if the adapter says so, submits the form. It
// shows what it does in a small banner (#bankbridge-card-status).
//
// A challenge is answered once: the service worker remembers, per tab,
// which challenges of which page got a code, so a bank that shows the same
// challenge again (after a refused code) is not answered again in a loop;
// a new challenge is. "Try again" in the banner asks once more on purpose.
(() => {
  if (globalThis.__bankbridgeCardScript) return; // injected twice (manifest and a user adapter)
  globalThis.__bankbridgeCardScript = true;

  const BANNER_ID = 'bankbridge-card-status';
  let adapter = null;
  let busy = false;
  let again = false;
  let lastKey = null;
  let timer = null;

  const send = (msg) =>
    chrome.runtime.sendMessage(msg).catch((e) => ({
      ok: false,
      kind: 'extension',
      message: `The extension did not answer (${e && e.message ? e.message : e}); reload the page.`,
    }));

  const digits = (text) => String(text ?? '').replace(/\D/g, '');
  const valueOf = (el) => {
    if (!el) return '';
    if (el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement || el instanceof HTMLSelectElement) {
      return el.value;
    }
    return el.textContent;
  };
  const find = (selector) => {
    if (!selector) return null;
    try {
      return document.querySelector(selector);
    } catch {
      return null;
    }
  };
  const findAll = (selector) => {
    try {
      return [...document.querySelectorAll(selector)];
    } catch {
      return [];
    }
  };

  // ---- the banner ----------------------------------------------------------

  const COLOURS = {
    idle: ['#f4f4f4', '#333', '#999'],
    working: ['#eef4ff', '#123', '#4a78c2'],
    done: ['#eefbea', '#142', '#3b8a2e'],
    error: ['#fff0ee', '#511', '#c0392b'],
  };

  function banner(state, text, kind, retry) {
    let box = document.getElementById(BANNER_ID);
    if (!box) {
      box = document.createElement('div');
      box.id = BANNER_ID;
      (document.body ?? document.documentElement).append(box);
    }
    const [bg, fg, edge] = COLOURS[state] ?? COLOURS.idle;
    box.setAttribute('style', [
      'all: initial', 'position: fixed', 'top: 12px', 'right: 12px', 'z-index: 2147483647',
      'max-width: 24em', 'padding: 10px 12px', 'border-radius: 6px', `border: 1px solid ${edge}`,
      `border-left: 6px solid ${edge}`, `background: ${bg}`, `color: ${fg}`,
      'font: 14px/1.4 system-ui, sans-serif', 'box-shadow: 0 2px 8px rgba(0,0,0,.2)',
    ].join(';'));
    box.dataset.state = state;
    box.dataset.kind = kind ?? '';
    box.setAttribute('role', state === 'error' ? 'alert' : 'status');
    box.replaceChildren();
    const title = document.createElement('strong');
    title.textContent = 'bankbridge card reader';
    title.setAttribute('style', 'all: initial; display: block; font: bold 13px system-ui, sans-serif; color: inherit; margin-bottom: 4px');
    const body = document.createElement('span');
    body.className = 'bankbridge-card-text';
    body.textContent = text;
    body.setAttribute('style', 'all: initial; display: block; font: inherit; color: inherit; white-space: pre-wrap');
    box.append(title, body);
    const buttons = document.createElement('span');
    buttons.setAttribute('style', 'all: initial; display: block; margin-top: 6px');
    const button = (label, onClick) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = label;
      b.setAttribute('style', `all: initial; cursor: pointer; font: 13px system-ui, sans-serif; color: ${fg}; border: 1px solid ${edge}; border-radius: 4px; padding: 2px 8px; margin-right: 6px; background: #fff`);
      b.addEventListener('click', onClick);
      buttons.append(b);
    };
    if (retry) button('Try again', () => evaluate(true));
    button('Hide', () => box.remove());
    box.append(buttons);
  }

  const report = (state, text, kind) => send({ type: 'status', state, text, kind });

  // ---- reading the page ------------------------------------------------------

  /** What the page asks, or null when it shows no challenge (yet). */
  function readPage() {
    const s = adapter.selectors;
    const response = find(s.response);
    if (!response) return null;
    let mode = null;
    let challenges = null;
    if (adapter.mode !== 'login' && s.signNumbers) {
      const numbers = findAll(s.signNumbers).map((el) => digits(valueOf(el))).filter(Boolean);
      if (numbers.length) {
        mode = 'sign';
        challenges = numbers;
      }
    }
    if (!mode && adapter.mode !== 'sign') {
      if (!s.challenge) {
        mode = 'login';
        challenges = [];
      } else {
        const challenge = digits(valueOf(find(s.challenge)));
        if (challenge) {
          mode = 'login';
          challenges = [challenge];
        }
      }
    }
    if (!mode) return null;
    return { mode, challenges, cardNumber: digits(valueOf(find(s.cardNumber))), response };
  }

  function fill(field, code) {
    field.focus();
    // The value property's own setter: pages built with frameworks that
    // track the field's value see the change like typing.
    const proto = field instanceof HTMLTextAreaElement ? HTMLTextAreaElement.prototype : HTMLInputElement.prototype;
    const setter = Object.getOwnPropertyDescriptor(proto, 'value')?.set;
    if (setter) setter.call(field, code);
    else field.value = code;
    field.dispatchEvent(new Event('input', { bubbles: true }));
    field.dispatchEvent(new Event('change', { bubbles: true }));
  }

  function submit(field) {
    const button = find(adapter.selectors.submit);
    if (button) {
      button.click();
      return true;
    }
    if (field.form) {
      field.form.requestSubmit();
      return true;
    }
    return false;
  }

  // ---- acting ----------------------------------------------------------------

  async function act(page, force) {
    const what = page.mode === 'sign' ? 'sign code' : 'login code';
    if (page.cardNumber.length < 4) {
      const text = 'This page shows no card number, so the card to use is not known. Nothing was filled in.';
      banner('error', text, 'no_card_number', false);
      await report('error', text, 'no_card_number');
      return;
    }
    const end = page.cardNumber.slice(-4);
    banner('working', `Asking card ····${end} for the ${what}…`, 'working', false);
    const answer = await send({
      type: 'compute',
      mode: page.mode,
      cardNumber: page.cardNumber,
      challenges: page.challenges,
      force,
    });
    if (!answer.ok) {
      const state = answer.kind === 'repeat' ? 'idle' : 'error';
      banner(state, answer.message, answer.kind, true);
      if (answer.kind === 'repeat') await report('idle', answer.message, answer.kind);
      return;
    }
    // The page may have moved on while the card worked.
    const now = readPage();
    if (!now || now.challenges.join(',') !== page.challenges.join(',')) {
      const text = 'The page changed while the card computed its code; nothing was filled in.';
      banner('error', text, 'page_changed', true);
      await report('error', text, 'page_changed');
      return;
    }
    fill(now.response, answer.code);
    const who = `card ····${answer.card.last4} (${answer.card.label})`;
    if (adapter.submit) {
      const text = `The ${what} from ${who} is filled in; sending it to the bank.`;
      banner('done', text, 'filled', false);
      await report('done', text, 'filled');
      if (!submit(now.response)) {
        const missing = `The ${what} from ${who} is filled in, but the page has no button to send it: send the form yourself.`;
        banner('done', missing, 'filled', false);
        await report('done', missing, 'filled');
      }
    } else {
      const text = `The ${what} from ${who} is filled in: check it and send the form.`;
      banner('done', text, 'filled', false);
      await report('done', text, 'filled');
    }
  }

  async function evaluate(force = false) {
    if (!adapter) return;
    if (busy) {
      again = true;
      return;
    }
    const page = readPage();
    if (!page) {
      if (lastKey === null) {
        lastKey = '';
        report('idle', `${adapter.name}: no challenge on this page.`, 'no_challenge');
      }
      return;
    }
    const key = `${page.mode} ${page.challenges.join(',')}`;
    if (!force && key === lastKey) return;
    lastKey = key;
    busy = true;
    try {
      await act(page, force);
    } finally {
      busy = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(() => evaluate(false), 250);
  }

  (async () => {
    const answer = await send({ type: 'adapter' });
    adapter = answer && answer.adapter ? answer.adapter : null;
    if (!adapter) return;
    await evaluate(false);
    // Pages that show the challenge later (or a new one after a refused
    // code) without loading again.
    new MutationObserver((records) => {
      const box = document.getElementById(BANNER_ID);
      if (records.every((r) => box && box.contains(r.target))) return;
      schedule();
    }).observe(document.documentElement, { childList: true, subtree: true, characterData: true });
  })();
})();
