//go:build linux

package storage

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"persona/internal/cputime"
)

// BenchmarkLogSync compares the two ways to make a round of log writes
// durable: through a shared memory map synced with msync, as badger does
// for its memtable log, and with pwrite and fdatasync on a plain file. An
// op is one round of roundKiB written and synced; cpu-us/op is the
// process's CPU time for it (most of it in the kernel).
// Run: go test -run '^$' -bench LogSync -benchtime 300x ./storage
func BenchmarkLogSync(b *testing.B) {
	const size = 64 << 20
	const roundKiB = 64
	round := make([]byte, roundKiB<<10)
	for i := range round {
		round[i] = byte(i)
	}
	open := func(b *testing.B) *os.File {
		f, err := os.OpenFile(filepath.Join(b.TempDir(), "log"), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		return f
	}
	run := func(b *testing.B, write func(off int), sync func() error) {
		off := 0
		cpu0 := cputime.Process()
		b.ResetTimer()
		for b.Loop() {
			if off+len(round) > size {
				off = 0
			}
			write(off)
			off += len(round)
			if err := sync(); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(cputime.Process()-cpu0)/1e3/float64(b.N), "cpu-us/op")
	}
	b.Run("mmap+msync", func(b *testing.B) {
		f := open(b)
		data, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Munmap(data)
		run(b, func(off int) { copy(data[off:], round) }, func() error { return unix.Msync(data, unix.MS_SYNC) })
	})
	b.Run("pwrite+fdatasync", func(b *testing.B) {
		f := open(b)
		run(b, func(off int) {
			if _, err := f.WriteAt(round, int64(off)); err != nil {
				b.Fatal(err)
			}
		}, func() error { return unix.Fdatasync(int(f.Fd())) })
	})
}
