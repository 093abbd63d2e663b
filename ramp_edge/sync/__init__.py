"""Sync between the robot and the training host (DESIGN.md, "Sync to the training host").

ZeroMQ DEALER (robot) / ROUTER (host) with CURVE; a ZAP handler admits only robot keys on the
host's allow-list and names each robot by its key. Sealed episodes travel content-addressed by
sha256, in hash-checked chunks under a credit window, resumable from the host's offset; the
host verifies, fsyncs and renames before it acknowledges, and the robot deletes only
acknowledged episodes. Bundles travel back the same way and are staged only after their hashes
and probe check out.

Modules: :mod:`keys` (key pairs, allow-list), :mod:`auth` (ZAP), :mod:`protocol` (messages),
:mod:`server` and :mod:`host_store` (the host), :mod:`client` (the robot's connection, push and
fetch), :mod:`bundles` (staging and activation), :mod:`state` (``HOME/sync.sqlite``),
:mod:`retention`, :mod:`settings` (``HOME/sync.toml``), :mod:`progress`, :mod:`faults` (drill
knob).
"""
