"""The lookup side: read ``recommendations`` into RocksDB and serve lists over HTTP.

Nothing here imports the model: the lookup consumer only ever sees published lists.
"""
