"""The OpenAI-compatible chat endpoint's logic (its HTTP routes are ``routes/chat.py``).

:mod:`.conversation` turns a conversation into a run and a run back into an answer; :mod:`.tool_agent` is the agent
behind the ``@tool NAME {args}`` chat command.
"""
