"""The Azure model's parts, without Azurite: its latency has the median and p99 asked for, its token
bucket lets through its rate and no more, and time-scaling keeps what has no unit."""

from __future__ import annotations

import random
import statistics
import time

from testkit.azure_model import AZURE_ACCOUNT_RATE, AZURE_QUEUE_RATE, Latency, ModelConfig, TokenBucket


def test_latency_has_the_median_and_99th_percentile_asked_for():
    latency = Latency(6.0, 40.0, random.Random(1))
    samples = sorted(latency.sample() * 1000 for _ in range(40_000))

    assert 5.7 < statistics.median(samples) < 6.3
    assert 36 < samples[int(len(samples) * 0.99)] < 44


def test_token_bucket_lets_through_its_rate_and_refuses_the_rest():
    bucket = TokenBucket(rate=200.0, capacity=5)
    taken = refused = 0
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        if bucket.ready():
            bucket.take()
            taken += 1
        else:
            refused += 1

    assert 5 + 0.5 * 200 * 0.9 <= taken <= 5 + 0.5 * 200 * 1.1
    assert refused > taken


def test_a_bucket_without_a_rate_only_spends_its_capacity():
    bucket = TokenBucket(rate=0.0, capacity=3)
    granted = 0
    for _ in range(10):
        if bucket.ready():
            bucket.take()
            granted += 1

    assert granted == 3


def test_scaling_divides_rates_and_multiplies_latency_alike():
    azure, slowed = ModelConfig.azure(), ModelConfig.azure(scale=50)

    assert (azure.queue_rate, azure.account_rate) == (AZURE_QUEUE_RATE, AZURE_ACCOUNT_RATE)
    assert slowed.queue_rate * slowed.median_ms == azure.queue_rate * azure.median_ms  # sends in flight per limit
    assert slowed.account_rate / slowed.queue_rate == azure.account_rate / azure.queue_rate
