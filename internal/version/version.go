// Package version holds the version stamped into every loupe binary.
package version

// Version is set at link time from the VERSION file:
// -ldflags "-X github.com/loupe-project/loupe/internal/version.Version=..."
var Version = "dev"
