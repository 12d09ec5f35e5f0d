"""The broker's figures in one pipelined round trip to Redis, with bounded sockets.

Keys are kombu's, as its Redis transport lays them out for Celery: a queue is a list named as the
queue, and each priority step above 0 a list of its own (``celery\\x06\\x163``, ``...6``,
``...9``); messages delivered to a worker and not yet acknowledged sit in the hash ``unacked``,
their delivery times in the sorted set ``unacked_index``. LLEN, HLEN, one ZRANGE and INFO are
constant-time reads: no scan of a queue, no ``inspect`` broadcast (which waits a whole second for
replies whether or not any worker answers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pixcrawler_exporter.collect.errors import CollectorError
from pixcrawler_exporter.collectors.celery.reading import BrokerReading, Moment, RedisInfo

if TYPE_CHECKING:
    import redis

# kombu.transport.redis: PRIORITY_STEPS and Channel.sep.
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEPARATOR = "\x06\x16"
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"


def queue_keys(queue: str) -> tuple[str, ...]:
    """The lists one queue's messages wait in, one per priority step."""
    return tuple(queue if p == 0 else f"{queue}{PRIORITY_SEPARATOR}{p}" for p in PRIORITY_STEPS)


def client(url: str, timeout: float) -> redis.Redis:
    """A client that gives up after ``timeout`` and never retries on its own: the refresher
    decides when to try again, and a retry inside one call would stretch it past its bound."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
        max_connections=2,
        client_name="pixcrawler-exporter",
        decode_responses=False,
    )


def read(conn: redis.Redis, queues: Sequence[str]) -> BrokerReading:
    """Queue depths, the unacknowledged messages and INFO, in one round trip."""
    import redis

    pipe = conn.pipeline(transaction=False)
    for queue in queues:
        for key in queue_keys(queue):
            pipe.llen(key)
    pipe.hlen(UNACKED)
    pipe.zrange(UNACKED_INDEX, 0, 0, withscores=True)
    pipe.info()
    try:
        answers = pipe.execute()
    except redis.RedisError as exc:
        raise CollectorError(f"reading the broker: {_reason(exc)}") from None
    now = Moment.now()
    steps = len(PRIORITY_STEPS)
    depths = {
        queue: sum(int(n) for n in answers[i * steps : (i + 1) * steps])
        for i, queue in enumerate(queues)
    }
    unacked_count, oldest, info = answers[len(queues) * steps :]
    oldest_age = max(0.0, now.wall - float(oldest[0][1])) if oldest else None
    return BrokerReading(depths, int(unacked_count), oldest_age, redis_info(info), now)


def redis_info(info: Mapping[str, object]) -> RedisInfo:
    """The INFO fields that say whether the broker itself is healthy."""
    limit = _int(info.get("maxmemory"))
    return RedisInfo(
        version=str(info.get("redis_version", "")),
        used_memory_bytes=_int(info.get("used_memory")),
        # maxmemory 0 is no limit, not a limit of 0 bytes (redis_exporter reads it so too).
        max_memory_bytes=limit or None,
        eviction_policy=str(info.get("maxmemory_policy", "")),
        evicted_keys=_int(info.get("evicted_keys")),
        rejected_connections=_int(info.get("rejected_connections")),
        connected_clients=_int(info.get("connected_clients")),
    )


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _reason(exc: Exception) -> str:
    """redis-py's message, or its type when it has none (a timeout says only 'Timeout ...')."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
