"""Outgoing notifications: webhooks produced from committed run events.

:mod:`.webhooks` (configuration, the dispatcher), :mod:`.formats` (generic JSON, Slack, Telegram), :mod:`.signing`
(delivery signatures, signed approve/reject links) and :mod:`.targets` (where webhooks may post).
"""
