// Package endpointv1 holds the messages of the CNI ↔ agent endpoint API;
// its gRPC service is in package endpointgrpc.
package endpointv1

//go:generate protoc --go_out=paths=source_relative:. --plugin=protoc-gen-go=../../../bin/tools/protoc-gen-go endpoint.proto
