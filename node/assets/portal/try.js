// The try-it page's live stream and test publish; served at {portal}/static/try.js.
'use strict';
(() => {
  const root = document.getElementById('try');
  const token = root.dataset.token;
  const list = document.getElementById('messages');
  const state = document.getElementById('state');
  let stream = null;
  const show = (text) => {
    const item = document.createElement('li');
    const code = document.createElement('code');
    code.textContent = text;
    item.appendChild(code);
    list.appendChild(item);
  };
  document.getElementById('connect').addEventListener('click', () => {
    if (stream) stream.close();
    const transport = document.querySelector('input[name=transport]:checked').value;
    const query = '?access_token=' + encodeURIComponent(token);
    if (transport === 'sse') {
      stream = new EventSource(root.dataset.sse + query);
      stream.onopen = () => { state.textContent = 'connected (SSE)'; };
      stream.onmessage = (e) => show(e.data);
      stream.addEventListener('close', (e) => { state.textContent = 'closed: ' + e.data; stream.close(); });
      stream.onerror = () => { state.textContent = 'reconnecting…'; };
    } else {
      stream = new WebSocket(root.dataset.ws + query);
      stream.onopen = () => { state.textContent = 'connected (WebSocket)'; };
      stream.onmessage = (e) => show(typeof e.data === 'string' ? e.data : '(binary)');
      stream.onclose = (e) => { state.textContent = 'closed: ' + e.code + ' ' + e.reason; };
    }
  });
  const publish = document.getElementById('publish');
  if (publish) {
    publish.addEventListener('click', async () => {
      const body = document.getElementById('message').value;
      let type = 'text/plain';
      try { JSON.parse(body); type = 'application/json'; } catch (_) {}
      const answer = await fetch(root.dataset.publish, {
        method: 'POST', body, headers: { 'Authorization': 'Bearer ' + token, 'Content-Type': type },
      });
      document.getElementById('published').textContent = answer.status === 202 ? 'published' : 'refused: ' + answer.status + ' ' + await answer.text();
    });
  }
})();
