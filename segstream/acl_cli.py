"""``segstream acl``: the Redis ACL lines to give segstream's user and the storefront's."""

from __future__ import annotations

import shlex

import click

from segstream.acl import segstream_acl, storefront_acl
from segstream.options import env_option


@click.command("acl")
@env_option("redis_prefix", "--redis-prefix", help="Prefix of every Redis key segstream writes.")
@click.option("--user", default="segstream", show_default=True, help="ACL user for segstream.")
@click.option(
    "--storefront-user", default="storefront", show_default=True, help="Read-only ACL user."
)
def acl(redis_prefix: str, user: str, storefront_user: str) -> None:
    """Print ``ACL SETUSER`` commands for segstream's processes and a read-only storefront.

    The passwords are placeholders: replace ``<password>`` (or use ``#<sha256>`` hashes) before
    running them with ``redis-cli``, or put the lines in an ACL file without ``ACL SETUSER``.
    """
    for name, rules in (
        (user, segstream_acl(redis_prefix)),
        (storefront_user, storefront_acl(redis_prefix)),
    ):
        words = ["ACL", "SETUSER", name, "on", "><password>", *rules]
        click.echo(" ".join(shlex.quote(word) for word in words))
