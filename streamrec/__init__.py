"""streamrec: an event-streaming incremental recommender.

Data flows one way: ``producers`` -> ``interactions`` topic -> ``stream_app`` (the worker) ->
``recommendations`` topic -> ``consumers`` (the lookup API). This package holds what every
part shares: settings, errors, the event schema, broker helpers and the command line.
"""

__version__ = "0.1.0"
