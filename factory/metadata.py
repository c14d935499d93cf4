"""``metadata`` as the OpenAI API takes it on batches and chat completions."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictStr

# OpenAI's documented limits on ``metadata``: at most 16 pairs, keys of at most 64 characters, values of
# at most 512, strings only. And no control characters (NUL included): metadata is stored and echoed back.
_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"
MetadataKey = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=_NO_CONTROL)]
MetadataValue = Annotated[StrictStr, Field(max_length=512, pattern=_NO_CONTROL)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)]
