// The toolbar popup: the status of the current tab and the recent activity
// of every tab (which the service worker keeps for this browser session).
// Opened as a page of its own (a tab), it shows the bank tab that reported
// last instead of itself.
const $ = (id) => document.getElementById(id);

const when = (iso) => new Date(iso).toLocaleTimeString();

function line(entry) {
  const text = document.createElement('span');
  text.className = `state-${entry.state}`;
  text.dataset.kind = entry.kind ?? '';
  text.textContent = entry.text;
  const meta = document.createElement('span');
  meta.className = 'when';
  meta.textContent = `${when(entry.at)} · ${entry.site} · ${entry.page}`;
  return [text, meta];
}

async function show() {
  const asPage = await chrome.tabs.getCurrent();
  let tabId = null;
  if (asPage) {
    $('tab-heading').textContent = 'The last bank page';
  } else {
    const [tab] = await chrome.tabs.query({ active: true, currentWindow: true });
    tabId = tab ? tab.id : -1;
  }
  const s = await chrome.runtime.sendMessage({ type: 'tabStatus', tabId });
  $('service').textContent = s.serviceUrl
    ? `Card service: ${s.serviceUrl} · ${s.tokenSaved ? 'a token is saved' : 'no token saved'}`
    : 'The card service is not set up yet: open the options.';
  if (s.tab) $('tab-status').replaceChildren(...line(s.tab));
  if (s.recent.length) {
    $('recent').replaceChildren(...s.recent.map((entry) => {
      const li = document.createElement('li');
      li.append(...line(entry));
      return li;
    }));
  }
}

$('open-options').addEventListener('click', (event) => {
  event.preventDefault();
  chrome.runtime.openOptionsPage();
});

show().catch((e) => {
  $('tab-status').textContent = `Could not read the status: ${e}`;
});
