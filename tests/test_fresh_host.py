"""Defaults on a host that runs no crawler: nothing counted that PixCrawler did not write, and no
alert (issue 19, item 5). The host here is a temp directory full of other programs' images, one
of them four years old, as found on a developer's machine."""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from pixcrawler_exporter import config
from pixcrawler_exporter.artifacts import rules
from tests.conftest import Exporter, free_port, http_get, need_tool, sample
from tests.helpers.processes import spawn, stop, wait_ready

FOUR_YEARS = 4 * 365 * 86400
HOST_FIGURES = {"cpu", "memory", "disk"}


def busy_tmp(root: Path) -> Path:
    """A $TMPDIR as other programs leave it: thumbnails, test fixtures, an old download."""
    tmp = root / "tmp"
    for name in ("thumbs/a.jpg", "pytest-fixtures/b.png", "c.webp", "old/d.jpeg"):
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 4096)
    old = time.time() - FOUR_YEARS
    os.utime(tmp / "old/d.jpeg", (old, old))
    return tmp


def test_the_default_temp_directory_counts_only_the_crawlers_files(
    exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    tmp = busy_tmp(tmp_path)
    exp = exporter_factory(env={"TMPDIR": str(tmp)})
    crawler_dir = str(tmp / "pixcrawler")
    samples = exp.scrape()
    # Not made yet: empty, not failed, and not the 16 KiB of other programs' images around it.
    assert sample(samples, "pixcrawler_temp_storage_bytes", directory=crawler_dir) == 0
    assert sample(samples, "pixcrawler_temp_storage_error", directory=crawler_dir) == 0
    assert sample(samples, "pixcrawler_exporter_collector_success", collector="temp_storage") == 1
    assert (
        sample(samples, "pixcrawler_temp_storage_oldest_file_age_seconds", directory=crawler_dir)
        is None
    )
    assert "temp directory does not exist yet" in exp.log()
    # The crawler makes it on its first chunk: followed from then on.
    (tmp / "pixcrawler/job-1/chunk-0").mkdir(parents=True)
    (tmp / "pixcrawler/job-1/chunk-0/0.jpg").write_bytes(b"x" * 1000)
    deadline = time.monotonic() + 10
    while sample(exp.scrape(), "pixcrawler_temp_storage_bytes", directory=crawler_dir) != 1000:
        assert time.monotonic() < deadline, exp.log()
        time.sleep(0.2)


def test_a_directory_given_that_does_not_exist_is_still_an_error(
    exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    # A typo must not read as free space: only the default may be missing.
    exp = exporter_factory(env={"PIXCRAWLER_TEMP_DIRS": str(tmp_path / "crawler-tmep")})
    samples = exp.scrape()
    assert sample(samples, "pixcrawler_exporter_collector_success", collector="temp_storage") == 0


@pytest.mark.e2e
@pytest.mark.slow
def test_defaults_raise_no_alert_on_a_host_without_a_crawler(
    exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    prometheus_bin = need_tool("prometheus")
    tmp = busy_tmp(tmp_path)
    exp = exporter_factory(env={"TMPDIR": str(tmp)})
    # The shipped rules from the defaults, every for: divided by 60 (2m is 2s), so that what
    # would go pending in the first minutes fires within this test.
    cfg = config.load({}, {}, None, dotenv_path=tmp_path / "absent.env").config
    (tmp_path / "rules.yml").write_text(rules.render(cfg, job="pixcrawler", for_scale=1 / 60))
    port = free_port()
    instance = exp.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(tmp_path / "rules.yml")],
                "scrape_configs": [
                    {"job_name": "pixcrawler", "static_configs": [{"targets": [instance]}]}
                ],
            }
        )
    )
    log = tmp_path / "prometheus.log"
    prom = spawn(
        [
            prometheus_bin,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        log,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(f"{url}/-/ready", prom, log)
        query = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": "up"})
        deadline = time.monotonic() + 30
        while not json.loads(http_get(query)[2])["data"]["result"]:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        time.sleep(15)  # fifteen evaluations: long past every scaled for:
        _, _, body = http_get(f"{url}/api/v1/alerts")
        # A busy or full machine running the suite is a true alert, not one the defaults made
        # up: CPU, memory and disk figures are the host's, whatever the defaults.
        alerts = [
            a
            for a in json.loads(body)["data"]["alerts"]
            if a["labels"].get("resource") not in HOST_FIGURES
            and not a["labels"]["alertname"].startswith("PixCrawlerDisk")
        ]
        assert alerts == [], json.dumps(alerts, indent=1)
    finally:
        stop(prom)
