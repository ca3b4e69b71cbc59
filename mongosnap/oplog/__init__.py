"""Point in time: oplog capture, continuous oplog archiving (and replay)."""
