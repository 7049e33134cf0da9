"""What WeChat Official Accounts and WeCom share of their callback protocol, in one place for both.

- ``crypto``: the request signature (SHA-1 of the sorted token, timestamp and nonce), and the "safe
  mode" message encryption (AES-256-CBC with the key from the 43-character EncodingAESKey, the
  receiver's id inside the plaintext), as Tencent's ``WXBizMsgCrypt`` specifies it;
- ``xmlmsg``: callback bodies parsed without DTDs, entities or external references, in bounded size,
  and replies written as CDATA;
- ``callback``: the checks every callback request passes before it is looked at (signature, a
  timestamp no more than 300 s off, a nonce not seen before), over a ``Seen`` port kept in Redis by
  ``bot/`` so they hold across instances.

It knows no SDK but the standard library, ``cryptography`` and ``defusedxml``.
"""
