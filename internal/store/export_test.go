package store

// ChunkSize is the size of the chunks a stored blob is checked in.
const ChunkSize = chunkSize
