"""Yibao on a WeChat Official Account (服务号): users are ``wx:<openid>``.

- the callback (``platforms.tencent.routes``) on the process's HTTP server (``wechat.callback_path``): the URL check
  (``GET``) and messages and events (``POST``, plaintext or safe mode), through
  ``platforms.tencent``'s checks;
- ``core``: what a message or an event becomes (an ``Inbound``), how the answer goes back (passive
  reply or customer-service messages, which path and why is said there), the alerts' ``Outlet``;
- ``api``: the API calls, with WeChat's token, busy and window rules;
- ``render``: texts cut to WeChat's size, choices as numbers or menu messages;
- ``state``: the ports for what must be shared by every instance (kept in Redis by ``bot/``);
- ``menu``: the account's custom menu.
"""
