"""Named credentials for tools: handed out at execution time (:mod:`.runtime`) and obtained by OAuth (:mod:`.oauth`).

Storage and encryption live in the store (``store/_credentials.py``) and :mod:`agentmaestro.crypto`.
"""
