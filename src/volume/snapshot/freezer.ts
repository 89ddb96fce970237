/**
 * Freezing filesystems around a snapshot's mark, with one process that freezes and thaws (perl, which
 * Debian always has: perl-base is essential). Against `fsfreeze -f` then `fsfreeze -u`:
 *   - no process starts inside the frozen window (the helper is started, and has opened the
 *     directories, before the freeze);
 *   - the journal is checkpointed first (EXT4_IOC_CHECKPOINT, outside the window): FIFREEZE on ext4
 *     flushes the whole journal to its home blocks, and that was most of the freeze's time;
 *   - the filesystems thaw when the caller says so, when its pipe closes (the caller died) or after
 *     a timeout: a crash never leaves a frozen filesystem behind.
 */
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { UserError } from '../../lib/errors.ts';

// ioctl numbers (linux/fs.h, linux/ext4.h): FIFREEZE/FITHAW = _IOWR('X', 119/120, int),
// EXT4_IOC_CHECKPOINT = _IOW('f', 43, __u32). A checkpoint that fails (not ext4, an older kernel) is skipped.
const SCRIPT = `
use strict; $| = 1;
my ($FREEZE, $THAW, $CHECKPOINT) = (0xC0045877, 0xC0045878, 0x4004662B);
my $timeout = shift @ARGV;
my @fh;
for my $d (@ARGV) { sysopen(my $fh, $d, 0) or die "cannot open $d: $!\\n"; push @fh, $fh; }
for my $fh (@fh) { my $z = pack("L", 0); ioctl($fh, $CHECKPOINT, $z); }
print "ready\\n";
defined(<STDIN>) or exit 0;
my @frozen;
sub thaw { my $bad = 0; for my $fh (@frozen) { my $z = pack("L", 0); ioctl($fh, $THAW, $z) or $bad++; } @frozen = (); return $bad; }
$SIG{ALRM} = sub { thaw(); print STDERR "thawed after " . $timeout . " s: nobody asked\\n"; exit 3; };
alarm($timeout);
for my $i (0 .. $#fh) {
  my $z = pack("L", 0);
  if (!ioctl($fh[$i], $FREEZE, $z)) { my $e = "$!"; thaw(); die "cannot freeze $ARGV[$i]: $e\\n"; }
  push @frozen, $fh[$i];
}
print "frozen\\n";
<STDIN>;
my $bad = thaw();
if ($bad) { print STDERR "could not thaw $bad filesystem(s)\\n"; exit 2; }
print "thawed\\n";
`;

type Helper = ChildProcessByStdio<Writable, Readable, Readable>;

/** Lines from the helper, one at a time; rejects with its stderr when it exits first. */
function lines(child: Helper): () => Promise<string> {
  const queue: string[] = [];
  let pending = '';
  let stderr = '';
  let exited: number | null | undefined;
  let wake: (() => void) | undefined;
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    pending += d;
    const parts = pending.split('\n');
    pending = parts.pop() ?? '';
    queue.push(...parts);
    wake?.();
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.on('close', (code) => {
    exited = code;
    wake?.();
  });
  child.on('error', (err) => {
    stderr += `cannot run perl: ${err.message}`;
    exited = -1;
    wake?.();
  });
  return async () => {
    for (;;) {
      const l = queue.shift();
      if (l !== undefined) return l;
      if (exited !== undefined)
        throw new UserError(stderr.trim() || `the freeze helper exited (${exited}) before answering`);
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
    }
  };
}

export interface Frozen {
  /** Thaws every filesystem; throws when one could not be thawed. */
  thaw(): Promise<void>;
}

/** A helper ready to freeze `dirs` (opened, journals checkpointed); `freeze()` returns once all are frozen. */
export async function prepareFreeze(
  dirs: readonly string[],
  timeoutS = 60,
): Promise<{ freeze(): Promise<Frozen>; cancel(): void }> {
  const child: Helper = spawn('perl', ['-e', SCRIPT, String(timeoutS), ...dirs], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  // A helper that died (its timeout thawed) answers through `next`; a write to it must not throw.
  child.stdin.on('error', () => {});
  const next = lines(child);
  const expect = async (want: string) => {
    const got = await next();
    if (got !== want) throw new UserError(`the freeze helper said "${got}", expected "${want}"`);
  };
  await expect('ready');
  return {
    cancel: () => child.stdin.end(),
    freeze: async () => {
      child.stdin.write('freeze\n');
      await expect('frozen');
      return {
        thaw: async () => {
          child.stdin.end('thaw\n');
          await expect('thawed');
        },
      };
    },
  };
}
