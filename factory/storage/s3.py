"""S3 backend over boto3: any S3 server (AWS, MinIO, SeaweedFS), path-style addressing.

The bucket is created on first use if it does not exist, so a fresh server works.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from factory.errors import NotFound, StorageError


@contextmanager
def _reading() -> Iterator[None]:
    """S3's errors as the store's: a missing key is NotFound, anything else a StorageError (an outage,
    retried by the callers that can)."""
    try:
        yield
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise NotFound("object not found") from exc
        raise StorageError("object storage read failed") from exc
    except BotoCoreError as exc:
        raise StorageError("object storage read failed") from exc


class S3Store:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("s3:// storage URL needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            ),
        )
        self._bucket_ready = False

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError("object storage refused access to the bucket") from exc
            try:
                self._client.create_bucket(Bucket=self.bucket)
            except ClientError as create_exc:
                code = create_exc.response.get("Error", {}).get("Code")
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise StorageError("could not create the storage bucket") from create_exc
        except BotoCoreError as exc:
            raise StorageError("object storage is unreachable") from exc
        self._bucket_ready = True

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._ensure_bucket()
        try:
            self._client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data,
                                    ContentType=content_type)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError("object storage write failed") from exc

    # Multipart upload in 8 MiB parts, two at a time: bounded memory for a 200 MB file.
    _TRANSFER = TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024,
                               max_concurrency=2)

    def put_file(self, key: str, fileobj: IO[bytes], content_type: str = "application/octet-stream") -> None:
        self._ensure_bucket()
        try:
            self._client.upload_fileobj(fileobj, self.bucket, self.prefix + key,
                                        ExtraArgs={"ContentType": content_type}, Config=self._TRANSFER)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError("object storage write failed") from exc

    def iter_bytes(self, key: str, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        with _reading():
            body = self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
            try:
                yield from body.iter_chunks(chunk_size)
            finally:
                body.close()

    def get_bytes(self, key: str) -> bytes:
        with _reading():
            return bytes(self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read())

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        with _reading():
            return bytes(self._client.get_object(Bucket=self.bucket, Key=self.prefix + key,
                                                 Range=f"bytes={offset}-{offset + length - 1}")["Body"].read())

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self.prefix + key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError("object storage read failed") from exc

    def list_keys(self, prefix: str) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        with _reading():
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.prefix):]

    def delete(self, key: str) -> None:
        """Idempotent (S3 answers a missing key with success); an outage is a StorageError."""
        with _reading():
            self._client.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def close(self) -> None:
        self._client.close()
