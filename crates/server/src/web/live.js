// bankbridge dashboard: the live parts of a page (a sync's progress, a
// BankID order's QR code) are a section with id "live" and a data-src; this
// swaps in a fresh copy of it every second until it says data-done. A form
// the person is filling in stays as it is while its question is the same.
(() => {
  const first = document.getElementById("live");
  if (!first || !first.dataset.src) return;
  const src = first.dataset.src;
  const every = Number(first.dataset.every || 1000);
  const tick = async () => {
    const current = document.getElementById("live");
    if (!current || current.hasAttribute("data-done")) return;
    try {
      const res = await fetch(src, { credentials: "same-origin", cache: "no-store" });
      if (res.redirected || res.status === 401) { window.location.reload(); return; }
      if (res.ok) {
        const doc = new DOMParser().parseFromString(await res.text(), "text/html");
        const next = doc.getElementById("live");
        const active = document.activeElement;
        const busy = active && active !== document.body && current.contains(active);
        if (next && !(busy && next.dataset.question === current.dataset.question)) {
          current.replaceWith(next);
        }
      }
    } catch (_) {
      // Offline for a moment: the next tick tries again.
    }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
})();
