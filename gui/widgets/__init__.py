"""The app's custom widgets, all drawn with QPainter/QImage (no matplotlib in the GUI)."""

from .blocks import BlockPanel, BlockSummary, ChannelGrid, summarize_blocks
from .topk import TopKBars
from .video import VideoView

__all__ = ["BlockPanel", "BlockSummary", "ChannelGrid", "TopKBars", "VideoView", "summarize_blocks"]
