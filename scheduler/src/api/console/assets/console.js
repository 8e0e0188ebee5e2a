// batchctl's web console: fetches the server-rendered fragment for this address with the API
// token in the Authorization header (never in a URL), keeps it live from the event stream, follows
// a job's output, and sends the buttons' requests to the API. No dependencies, nothing fetched from
// elsewhere.
'use strict';
(() => {
  const TOKEN_KEY = 'batchctl-token';
  const MAX_OUTPUT_CHARS = 2000000;
  const view = document.getElementById('view');
  const login = document.getElementById('login');
  const tokenInput = document.getElementById('token');
  const statusLine = document.getElementById('status');
  const forget = document.getElementById('forget');
  const dialog = document.getElementById('confirm');
  const reasonInput = document.getElementById('confirm-reason');
  let loaded = false;
  let followers = [];
  let refreshTimer = null;
  let refreshWanted = false;

  const token = () => sessionStorage.getItem(TOKEN_KEY);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function headers(extra) {
    const all = Object.assign({}, extra || {});
    const stored = token();
    if (stored) all.Authorization = 'Bearer ' + stored;
    return all;
  }

  function say(text) {
    statusLine.textContent = text;
  }

  // The fragment of this address: / is the overview, /console/x is /ui/x.
  function fragmentAddress() {
    const path = location.pathname.replace(/\/+$/, '');
    const base = path === '' || path === '/console' ? '/ui/overview' : path.replace(/^\/console/, '/ui');
    return base + location.search;
  }

  async function problem(response) {
    try {
      const body = await response.json();
      return body.detail || body.title || response.statusText;
    } catch (_) {
      return response.status + ' ' + response.statusText;
    }
  }

  function showLogin(reason) {
    for (const follower of followers) follower.abort();
    followers = [];
    view.replaceChildren();
    view.setAttribute('aria-busy', 'false');
    login.hidden = false;
    forget.hidden = !token();
    document.getElementById('login-reason').textContent = reason;
    tokenInput.focus();
  }

  async function load(refresh) {
    let response;
    try {
      response = await fetch(fragmentAddress(), { headers: headers(), cache: 'no-store' });
    } catch (error) {
      say('The server does not answer (' + error.message + '); trying again.');
      return;
    }
    if (response.status === 401) {
      showLogin(await problem(response));
      return;
    }
    if (!response.ok && response.status !== 404) {
      say(await problem(response));
      if (!loaded) view.setAttribute('aria-busy', 'false');
      return;
    }
    const html = await response.text();
    login.hidden = true;
    forget.hidden = !token();
    if (refresh && loaded && swapLive(html)) return;
    render(html);
  }

  function render(html) {
    for (const follower of followers) follower.abort();
    followers = [];
    view.innerHTML = html;
    loaded = true;
    view.setAttribute('aria-busy', 'false');
    const heading = view.querySelector('h1');
    document.title = (heading ? heading.textContent + ' · ' : '') + 'batchctl';
    wire(view);
  }

  // Swaps the live sections by id and leaves the rest (a streaming output, an open form) alone.
  // False when the page changed shape (a new attempt's output to follow): render it whole then.
  function swapLive(html) {
    const fresh = new DOMParser().parseFromString(html, 'text/html').body;
    const follows = (root) => Array.from(root.querySelectorAll('[data-follow]'), (e) => e.dataset.follow).join(' ');
    if (follows(fresh) !== follows(view)) return false;
    for (const section of fresh.querySelectorAll('[data-live][id]')) {
      const current = document.getElementById(section.id);
      if (!current) return false;
      // Someone typing in a field of this section keeps what they typed.
      const active = document.activeElement;
      if (current.contains(active) && active.matches('input, select, textarea')) continue;
      if (current.innerHTML !== section.innerHTML) {
        current.innerHTML = section.innerHTML;
        wire(current);
      }
    }
    return true;
  }

  function wire(root) {
    for (const time of root.querySelectorAll('time[datetime]')) {
      time.title = time.textContent;
      time.textContent = new Date(time.dateTime).toLocaleString();
    }
    for (const button of root.querySelectorAll('button[data-action]')) {
      button.addEventListener('click', () => confirmAction(button));
    }
    for (const pre of root.querySelectorAll('pre[data-follow]')) follow(pre);
    for (const link of document.querySelectorAll('header nav a')) {
      const here = link.getAttribute('href') === location.pathname;
      if (here) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
  }

  // Appends a job's output as it is written, to the end of the attempt.
  async function follow(pre) {
    const controller = new AbortController();
    followers.push(controller);
    let response;
    try {
      response = await fetch(pre.dataset.follow, { headers: headers(), signal: controller.signal });
      if (!response.ok) {
        pre.textContent = await problem(response);
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        let text = pre.textContent + decoder.decode(value, { stream: true });
        if (text.length > MAX_OUTPUT_CHARS) {
          text = '[… earlier output left out here; `batchctl logs` has it all]\n' + text.slice(-MAX_OUTPUT_CHARS);
        }
        pre.textContent = text;
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }
      pre.dataset.ended = 'true';
    } catch (error) {
      if (error.name !== 'AbortError') pre.dataset.ended = 'interrupted';
    }
  }

  function confirmAction(button) {
    document.getElementById('confirm-title').textContent = button.dataset.confirm;
    const stopsJob = !button.dataset.body;
    reasonInput.parentElement.querySelector('label[for="confirm-reason"]').hidden = !stopsJob;
    reasonInput.hidden = !stopsJob;
    dialog.returnValue = '';
    dialog.onclose = async () => {
      if (dialog.returnValue !== 'confirm') {
        button.focus();
        return;
      }
      const body = button.dataset.body || JSON.stringify({ reason: reasonInput.value });
      let response;
      try {
        response = await fetch(button.dataset.action, {
          method: 'POST',
          headers: headers({ 'Content-Type': 'application/json' }),
          body,
        });
      } catch (error) {
        say('The request failed: ' + error.message);
        return;
      }
      say(response.ok ? 'Done: ' + button.textContent.trim() + '.' : 'Refused: ' + (await problem(response)));
      load(true);
    };
    dialog.showModal();
  }

  // Refreshes after events, at most every 700 ms, never while a dialog is open.
  function scheduleRefresh() {
    refreshWanted = true;
    if (refreshTimer) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      if (dialog.open || !loaded) return scheduleRefresh();
      refreshWanted = false;
      await load(true);
    }, 700);
  }

  function showEvent(seq, envelope) {
    const log = document.getElementById('event-log');
    if (!log || log.querySelector('[data-seq="' + seq + '"]')) return;
    const item = document.createElement('li');
    item.dataset.seq = seq;
    const detail = envelope.detail || {};
    const when = document.createElement('time');
    when.dateTime = envelope.time || '';
    when.textContent = envelope.time ? new Date(envelope.time).toLocaleString() : '';
    const type = document.createElement('strong');
    type.textContent = envelope['detail-type'] || '';
    const source = document.createElement('code');
    source.textContent = envelope.source || '';
    item.append(when, ' ', type, ' from ', source);
    if (typeof detail.jobId === 'string') {
      const link = document.createElement('a');
      link.href = '/console/jobs/' + encodeURIComponent(detail.jobId);
      link.textContent = detail.jobId;
      item.append(' ', link);
    }
    if (typeof detail.status === 'string') item.append(' → ' + detail.status);
    log.prepend(item);
  }

  // The server's event stream (server-sent events, read with fetch so the token goes in a header).
  async function stream() {
    let after = null;
    for (;;) {
      try {
        const address = '/v1/events/stream' + (after === null ? '' : '?after=' + after);
        const response = await fetch(address, { headers: headers() });
        if (response.ok) {
          const reader = response.body.getReader();
          const decoder = new TextDecoder();
          let buffer = '';
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            buffer += decoder.decode(value, { stream: true });
            let end;
            while ((end = buffer.indexOf('\n\n')) >= 0) {
              const block = buffer.slice(0, end);
              buffer = buffer.slice(end + 2);
              let id = null;
              let data = '';
              for (const line of block.split('\n')) {
                if (line.startsWith('id:')) id = line.slice(3).trim();
                else if (line.startsWith('data:')) data += line.slice(5).trim();
              }
              if (id === null || !data) continue;
              after = id;
              try {
                showEvent(id, JSON.parse(data));
              } catch (_) {
                // Not an event this page can show; the refresh below still applies.
              }
              scheduleRefresh();
            }
          }
        }
      } catch (_) {
        // The server restarted or the network dropped: look again shortly.
      }
      await sleep(2000);
    }
  }

  login.addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
    tokenInput.value = '';
    say('');
    load(false);
  });
  forget.addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });

  load(false);
  stream();
  // Charts and counts move without events too (time passes): look again now and then.
  setInterval(() => {
    if (!document.hidden) scheduleRefresh();
  }, 15000);
})();
