// Package seceventsv1 is the runtime security events API: the messages and
// the SecurityEvents gRPC service that agents and loupe-relay serve.
package seceventsv1

//go:generate protoc -I. --go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. --plugin=protoc-gen-go=../../../bin/tools/protoc-gen-go --plugin=protoc-gen-go-grpc=../../../bin/tools/protoc-gen-go-grpc secevents.proto
