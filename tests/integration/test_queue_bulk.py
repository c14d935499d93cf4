"""send_many (pipelined publishing for big batches) puts the same envelope on Redis as send_task."""

from __future__ import annotations

import base64
import json

import redis

from factory import queue
from factory.config import Settings


def test_pipelined_messages_match_send_task(broker_url: str) -> None:
    settings = Settings(broker_url=broker_url)
    queue.send(settings, "factory.generate_chunk", ["chk_one"], "gen.bulk-test", "msg_one")
    queue.send_many(settings, "factory.generate_chunk", "gen.bulk-test",
                    [(f"msg_{i}", [f"chk_{i}"]) for i in range(1200)])
    client = redis.Redis.from_url(broker_url)
    raw = client.lrange("gen.bulk-test", 0, -1)
    assert len(raw) == 1201
    envelopes = [json.loads(m) for m in raw]
    single = next(e for e in envelopes if e["headers"]["id"] == "msg_one")
    bulk = next(e for e in envelopes if e["headers"]["id"] == "msg_7")
    assert bulk.keys() == single.keys()
    assert bulk["headers"].keys() == single["headers"].keys()
    assert {k: v for k, v in bulk["headers"].items() if k not in ("id", "root_id", "argsrepr")} == \
        {k: v for k, v in single["headers"].items() if k not in ("id", "root_id", "argsrepr")}
    assert bulk["headers"]["root_id"] == "msg_7" and bulk["headers"]["argsrepr"] == "['chk_7']"
    assert bulk["properties"]["correlation_id"] == "msg_7"
    assert bulk["properties"].keys() == single["properties"].keys()
    same = ("delivery_mode", "priority", "body_encoding")  # reply_to: each producer app's own id, as send_task
    assert {k: bulk["properties"][k] for k in same} == {k: single["properties"][k] for k in same}
    assert bulk["properties"]["delivery_info"]["routing_key"] == "gen.bulk-test"
    assert bulk["content-type"] == single["content-type"] == "application/json"
    args, kwargs, embed = json.loads(base64.b64decode(bulk["body"]))
    assert (args, kwargs) == (["chk_7"], {}) and embed == json.loads(base64.b64decode(single["body"]))[2]
    assert sorted(e["headers"]["id"] for e in envelopes) == sorted(["msg_one"] + [f"msg_{i}" for i in range(1200)])
