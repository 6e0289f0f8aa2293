"""Mounting components: two instances of one component, three components in one transaction.

    pip install -e . && python examples/mounting.py

A tiny blog. The app mounts the rate limiter once (``limits``) and the sharded counter twice
(``likes`` and ``views``: one component, two instances, each with its own tables). Publishing
a post takes a rate-limit token, inserts the post and bumps a counter in ONE mutation, so the
three writes commit together or not at all. The script prints each step:

1. mount the components;
2. publish through the rate limit (the third post in a minute is refused, and nothing of it
   is written);
3. like and view a post: the two counter instances keep separate counts;
4. a mutation that fails after its writes: the rate-limit token, the post and the count are
   all rolled back;
5. a failure that is caught: a nested mutation (it bumps ``views`` then fails) is undone
   alone, the caller's own write commits.

Without ``CAPSULE_DB_URL`` it runs on a fresh SQLite file in a temporary folder.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from typing import Any

from components.rate_limiter import MINUTE, RateLimiter, RateLimitError, TokenBucket
from components.rate_limiter import component as rate_limiter
from components.sharded_counter import ShardedCounter
from components.sharded_counter import component as sharded_counter
from core import App, AppError, MutationCtx, QueryCtx, Schema, Table

schema = Schema(
    posts=Table({"author": str, "title": str}).index("by_author", ["author"]),
    notes=Table({"text": str}),
)
app = App(schema)

# One rate limiter, two instances of the sharded counter: "likes" and "views" each get their
# own tables, so the same counter name counts separately in each.
limiter = RateLimiter(
    app.use(rate_limiter, name="limits"),
    {"publish": TokenBucket(2, MINUTE, capacity=2)},  # two posts a minute per author
)
likes = ShardedCounter(app.use(sharded_counter, name="likes"), default_shards=4)
views = ShardedCounter(app.use(sharded_counter, name="views"), default_shards=8)


@app.mutation
def publish(ctx: MutationCtx, author: str, title: str) -> str:
    """Rate limit, insert and count: one transaction across two components and the app."""
    limiter.limit(ctx, "publish", key=author, throws=True)  # raises RateLimitError (an AppError)
    post_id = ctx.db.insert("posts", {"author": author, "title": title})
    likes.add(ctx, "posts_published")
    return post_id


@app.mutation
def publish_then_fail(ctx: MutationCtx, author: str, title: str) -> str:
    """Does every write of ``publish``, then fails: none of them may survive."""
    post_id = publish(ctx, author, title)  # a plain call: the same transaction
    raise AppError({"code": "moderation", "post": post_id}, "The post failed moderation.")


@app.mutation
def like(ctx: MutationCtx, post_id: str) -> None:
    likes.inc(ctx, f"post:{post_id}")


@app.mutation
def view(ctx: MutationCtx, post_id: str) -> None:
    views.inc(ctx, f"post:{post_id}")


@app.internal_mutation
def view_strictly(ctx: MutationCtx, post_id: str) -> None:
    """Counts a view, then refuses: the view must be undone with it."""
    views.inc(ctx, f"post:{post_id}")
    raise AppError({"code": "bot_traffic"}, "Views from bots are not counted.")


@app.mutation
def view_or_note(ctx: MutationCtx, post_id: str) -> str:
    """Try a nested mutation; when it fails, keep a note instead (the caller's write stays)."""
    try:
        ctx.run_mutation(view_strictly, {"post_id": post_id})
        return "counted"
    except AppError as exc:
        ctx.db.insert("notes", {"text": f"view not counted: {exc.data['code']}"})
        return "noted"


@app.query
def stats(ctx: QueryCtx, post_id: str, author: str) -> dict[str, Any]:
    """What each table space holds now."""
    tokens = limiter.get_value(ctx, "publish", key=author).value
    return {
        "posts": len(ctx.db.query("posts").collect()),
        "published": likes.count(ctx, "posts_published"),
        "likes": likes.count(ctx, f"post:{post_id}"),
        "views": views.count(ctx, f"post:{post_id}"),
        f"{author}'s publish tokens": round(tokens, 1),
        "notes": [n["text"] for n in ctx.db.query("notes").collect()],
    }


def show(client: Any, post_id: str, author: str, *keys: str) -> None:
    found = client.query(stats, {"post_id": post_id, "author": author})
    print("   state: " + ", ".join(f"{key}={found[key]!r}" for key in keys))


def run() -> None:
    with app.sync_client() as client:
        print("1. Mounted: limits (rate_limiter), likes and views (two sharded_counter instances)")
        for name in ("limits", "likes", "views"):
            print(f"   app.components.{name}")

        print("\n2. Publish: rate limit + insert + count, one mutation each")
        first = client.mutation(publish, {"author": "ada", "title": "Hello"})
        print(f"   published {first}")
        second = client.mutation(publish, {"author": "ada", "title": "Again"})
        print(f"   published {second}")
        show(client, first, "ada", "posts", "published", "ada's publish tokens")
        try:
            client.mutation(publish, {"author": "ada", "title": "Too soon"})
        except RateLimitError as exc:
            print(
                f"   third post refused: {exc.data['kind']} (retry after ~{exc.retry_after:.0f} s)"
            )
        show(client, first, "ada", "posts", "published", "ada's publish tokens")

        print("\n3. Two instances of one component keep separate counts")
        for _ in range(3):
            client.mutation(like, {"post_id": first})
        for _ in range(5):
            client.mutation(view, {"post_id": first})
        show(client, first, "ada", "likes", "views")

        print("\n4. A mutation that fails after its writes leaves nothing behind")
        show(client, first, "bob", "posts", "published", "bob's publish tokens")
        try:
            client.mutation(publish_then_fail, {"author": "bob", "title": "Spam"})
        except AppError as exc:
            print(f"   failed: {exc} data={exc.data['code']!r}")
        show(client, first, "bob", "posts", "published", "bob's publish tokens")

        print("\n5. A caught failure undoes only the nested mutation's writes")
        outcome = client.mutation(view_or_note, {"post_id": first})
        print(f"   view_or_note -> {outcome!r}")
        show(client, first, "ada", "views", "notes")

    print("\nDone.")


def main() -> None:
    # Capsule logs each failed call (WARNING); shown inline so the story reads in order.
    logging.basicConfig(stream=sys.stdout, format="   [log] %(levelname)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="capsule-mounting-") as folder:
        if not os.environ.get("CAPSULE_DB_URL"):
            os.environ["CAPSULE_DB_URL"] = f"sqlite:///{os.path.join(folder, 'blog.db')}"
        print(f"Database: {os.environ['CAPSULE_DB_URL']}\n")
        run()


if __name__ == "__main__":
    main()
