"""How far a consumer of the review log is behind its end, per partition."""

from __future__ import annotations

import msgspec


class PartitionLag(msgspec.Struct, frozen=True):
    partition: int
    checkpoint: int  # last offset applied, -1 for none
    high_watermark: int  # next offset the broker will write
    lag: int
    refused: int = 0  # commits the store refused for this partition (another worker or a swap moved it first)

    @classmethod
    def of(cls, partition: int, checkpoint: int, high_watermark: int, refused: int = 0) -> "PartitionLag":
        """The one lag computation: the records after the checkpoint, up to the high watermark."""
        return cls(partition, checkpoint, high_watermark, max(0, high_watermark - checkpoint - 1), refused)
