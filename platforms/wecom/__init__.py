"""Yibao as a WeCom (企业微信) self-built app (自建应用): users are ``wecom:<corp id>:<userid>``.

- ``callback``: the routes on the process's HTTP server (``wecom.callback_path``): the URL check
  (``GET``, an encrypted ``echostr`` answered in plaintext) and messages and events (``POST``,
  always encrypted, the corp id checked inside), through ``platforms.tencent``'s checks, shared with
  WeChat;
- ``core``: what a message, a card click or a contact change becomes, and the answers: texts, and
  template cards for choices (a click answers the choice and disables the card);
- ``api``: ``gettoken``, ``message/send``, ``message/update_template_card``, ``user/get``;
- ``state``: the ports for what every instance shares (Redis, in ``bot/``), the per-member pace
  included.
"""
