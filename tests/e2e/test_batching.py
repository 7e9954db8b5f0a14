"""How the proxy groups records into BATCH messages to a server:
`--batch-spacing` holds a batch that is not full until the spacing since the
previous one has passed, gathering the records written meanwhile."""

from __future__ import annotations

import time

from conftest import default_rules, proxy_refusal, wait_for


def test_a_batch_spacing_gathers_a_steady_stream_into_fewer_batches(syncs_factory, redis_target):
    import intc

    spacing, n = 0.2, 30
    s = syncs_factory(default_rules(redis_target.url, None), proxy_args=["--batch-spacing", "200ms"])
    ic = intc.IncClient()
    before = s.proxy_metric("syncs_proxy_batches_sent_total")
    started = time.monotonic()
    for i in range(n):
        ic.redis_one(s.socket, 6379, 0, ("rpush", "l", str(i)))
        time.sleep(0.02)  # a steady trickle, one record every 20 ms
    wait_for(lambda: redis_target.client(0).llen("l") == n, what="every write applied")
    elapsed = time.monotonic() - started
    batches = s.proxy_metric("syncs_proxy_batches_sent_total") - before
    # Every record arrived, in order, and no two batches started less than
    # the spacing apart (none was full): at most one per spacing, plus the
    # first.
    assert redis_target.client(0).lrange("l", 0, -1) == [str(i).encode() for i in range(n)]
    assert 1 <= batches <= elapsed / spacing + 1, (batches, elapsed)


def test_a_batch_spacing_over_a_second_is_refused(tmp_path):
    err = proxy_refusal(tmp_path, "--batch-spacing", "2s")
    assert "--batch-spacing 2s is over the most allowed, 1s" in err, err
