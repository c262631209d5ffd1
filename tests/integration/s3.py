"""A local S3 endpoint (moto's server, in a child process) that gives the bundled
Tansu broker a storage which outlives the broker process: its ``s3://`` storage
keeps topics, records and committed group offsets across a restart (the memory
storage loses them; the PostgreSQL storage is not built into this Tansu)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.exceptions import EndpointConnectionError

from monitor.broker import free_port

_REGION = "eu-west-2"


class LocalS3:
    """``with LocalS3(log) as s3: EmbeddedBroker(storage=s3.storage, env=s3.env)``."""

    bucket = "tansu"

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def storage(self) -> str:
        return f"s3://{self.bucket}/"

    @property
    def env(self) -> dict[str, str]:
        """What Tansu's S3 storage reads to reach this endpoint."""
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true",
                "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_DEFAULT_REGION": _REGION}

    def __enter__(self) -> LocalS3:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT)
        s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name=_REGION,
                          aws_access_key_id="test", aws_secret_access_key="test")
        deadline = time.monotonic() + 30
        while True:
            try:
                s3.create_bucket(Bucket=self.bucket,
                                 CreateBucketConfiguration={"LocationConstraint": _REGION})
                return self
            except EndpointConnectionError:  # not listening yet
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.__exit__()
                    raise
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
