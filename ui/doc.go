// Package ui is loupe's web UI: a live service map of the cluster.
//
// The server side follows the relay's merged flow stream, aggregates it into
// a service map (workloads as nodes, (source, destination, port, protocol) as
// edges) and streams map deltas, a rate-limited flow feed and the connection
// state to browsers over a websocket. Browsers never receive every flow: the
// aggregation happens here, and each browser's flow feed is filtered and
// rate-limited on the server.
//
// The frontend source lives in ui/web; its built assets in ui/dist are
// committed and embedded, so building loupe needs no node.
package ui
