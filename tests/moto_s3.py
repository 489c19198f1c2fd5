"""An S3-compatible server on 127.0.0.1 for tests: moto's `moto_server`, checking request signatures."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

BUCKET = "s9-bucket"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_client(env: dict[str, str]):
    """A boto3 S3 client as the user in `env` (moto_server's endpoint and key)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


@contextlib.contextmanager
def moto_server(log: Path) -> Iterator[dict[str, str]]:
    """A moto S3 server that checks signatures, with the bucket BUCKET; yields the environment a
    user would set (its endpoint and a key it accepts). Stopped by pid."""
    import boto3

    # the first 4 requests (creating a user, its key and policy, and the bucket) go unchecked;
    # every later one must be signed with that key
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}
    with open(log, "w") as fh:
        server = subprocess.Popen(
            # port 0: the server binds a free port itself and prints it (a port picked by
            # bind-and-close could be taken by another process in between)
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", "0"],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 60
        while not (found := re.search(r"Running on http://127\.0\.0\.1:(\d+)", log.read_text())):
            assert time.time() < deadline and server.poll() is None, log.read_text()
            time.sleep(0.2)  # polling the log for the line that says the server is up
        port = int(found.group(1))
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        user = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ACCESS_KEY_ID": "setup",
            "AWS_SECRET_ACCESS_KEY": "setup",
        }
        kw = {
            "endpoint_url": user["AWS_ENDPOINT_URL"],
            "region_name": "us-east-1",
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        iam = boto3.client("iam", **kw)
        iam.create_user(UserName="s9tune")
        key = iam.create_access_key(UserName="s9tune")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="s9tune", PolicyName="all", PolicyDocument=json.dumps(policy))
        boto3.client("s3", **kw).create_bucket(Bucket=BUCKET)
        user.update(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
        yield {**os.environ, **user}
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
