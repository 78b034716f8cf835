"""Reading a user's list: from the lookup API, else straight from the topic."""

from __future__ import annotations

from typing import Annotated

import typer

from streamrec.cli.options import Bootstrap, StateDir, settings_from

def recommend(user_id: Annotated[str, typer.Argument(help="the user's id")],
              n: Annotated[int, typer.Option("-n", help="list length")] = 10,
              api: Annotated[str, typer.Option(help="lookup API base URL")] =
              "http://127.0.0.1:8000",
              bootstrap_servers: Bootstrap = None, state_dir: StateDir = None) -> None:
    """Print a user's current list (from the lookup API, else from the topic)."""
    import dataclasses

    import orjson

    from consumers.topic_lookup import latest_list
    from streamrec.client import LookupClient
    from streamrec.errors import LookupFailed

    s = settings_from(bootstrap_servers, state_dir)
    token = s.api_token.get_secret_value() if s.api_token else None
    try:
        with LookupClient(api, token=token, timeout=5) as client:
            doc = dataclasses.asdict(client.get(user_id, n))
        doc["items"] = [{k: v for k, v in it.items() if v is not None} for it in doc["items"]]
    except LookupFailed:
        doc = latest_list(s, user_id, n)
    typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
