// Package resourcesv1 is the per-pod resource API: the messages and the
// Resources gRPC service that agents and loupe-relay serve.
package resourcesv1

//go:generate protoc -I. --go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. --plugin=protoc-gen-go=../../../bin/tools/protoc-gen-go --plugin=protoc-gen-go-grpc=../../../bin/tools/protoc-gen-go-grpc resources.proto
