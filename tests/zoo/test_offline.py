"""Offline, every hub source fails at once with one clear error, as weights do."""

import socket
import time

import pytest

from zoo import data


def test_offline_tfds_download_fails_at_once(tmp_path, monkeypatch):
    # Downloading allowed, but no name resolves: tfds' own downloader would retry with
    # backoff for minutes before its error.
    import tensorflow_datasets as tfds

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    def never(*args, **kwargs):
        raise AssertionError("download_and_prepare must not be called without a network")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", never)
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    start = time.perf_counter()
    with pytest.raises(data.DatasetUnavailableError, match="no network.*tfds build tf_flowers"):
        data.load("tfds:tf_flowers", data_dir=str(tmp_path), download=True)
    assert time.perf_counter() - start < 60
