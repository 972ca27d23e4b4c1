"""Feature flags: operators switch endpoints off without a deploy.

`catalog` names the flags, `defaults` reads their environment defaults, an
admin's override lives in the database (`models`, `service`), and each worker
serves flags from memory (`flags`), refreshed in the background.

Nothing is imported here: `config` imports `catalog` while it is being built.
"""
