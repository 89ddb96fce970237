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
// Commands on stdin: "freeze" (then "thaw"), or "mark<TAB>SOCKET<TAB>REQUEST": freeze, send the
// request line to the daemon's control socket, thaw as soon as its reply is in, then print
// "marked US FREEZE_US" (how long the filesystems were frozen, and of that the FIFREEZE calls
// themselves: they write what is left dirty) and "reply LINE".
const SCRIPT = `
use strict; use IO::Socket::UNIX; $| = 1;
# Time::HiRes is in Debian's perl, not perl-base: without it the window is not measured (-1).
my $now = eval { require Time::HiRes; \\&Time::HiRes::time } || sub { -1 };
my ($FREEZE, $THAW, $CHECKPOINT) = (0xC0045877, 0xC0045878, 0x4004662B);
my $timeout = shift @ARGV;
my @fh;
for my $d (@ARGV) { sysopen(my $fh, $d, 0) or die "cannot open $d: $!\n"; push @fh, $fh; }
for my $fh (@fh) { my $z = pack("L", 0); ioctl($fh, $CHECKPOINT, $z); }
print "ready\n";
my $cmd = <STDIN>;
defined($cmd) or exit 0;
chomp $cmd;
my ($what, $sock, $req) = split(/\t/, $cmd, 3);
my @frozen;
sub thaw { my $bad = 0; for my $fh (@frozen) { my $z = pack("L", 0); ioctl($fh, $THAW, $z) or $bad++; } @frozen = (); return $bad; }
$SIG{ALRM} = sub { thaw(); print STDERR "thawed after " . $timeout . " s: nobody asked\n"; exit 3; };
alarm($timeout);
my $t0 = $now->();
for my $i (0 .. $#fh) {
  my $z = pack("L", 0);
  if (!ioctl($fh[$i], $FREEZE, $z)) { my $e = "$!"; thaw(); die "cannot freeze $ARGV[$i]: $e\n"; }
  push @frozen, $fh[$i];
}
my $t1 = $now->();
if ($what eq "mark") {
  my $reply = "";
  my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $sock);
  my $err = $s ? "" : "$!";
  if ($s) { print $s "$req\n"; local $/; $reply = <$s>; $reply = "" unless defined $reply; close($s); }
  my $bad = thaw();
  my $us = $t0 < 0 ? -1 : int(($now->() - $t0) * 1e6);
  my $fus = $t0 < 0 ? -1 : int(($t1 - $t0) * 1e6);
  if ($bad) { print STDERR "could not thaw $bad filesystem(s)\n"; exit 2; }
  if ($err ne "") { print STDERR "cannot reach the volume daemon at $sock: $err\n"; exit 4; }
  $reply =~ s/\n+$//;
  print "marked $us $fus\nreply $reply\n";
  exit 0;
}
print "frozen\n";
<STDIN>;
my $bad = thaw();
if ($bad) { print STDERR "could not thaw $bad filesystem(s)\n"; exit 2; }
print "thawed\n";
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

/**
 * A helper ready to freeze `dirs` (opened, journals checkpointed): `freeze()` returns once all are
 * frozen (then `thaw()`); `mark()` freezes, relays one request to the daemon and thaws.
 */
export async function prepareFreeze(
  dirs: readonly string[],
  timeoutS = 60,
): Promise<{
  freeze(): Promise<Frozen>;
  /**
   * Freezes, has the helper itself send `request` (one JSON line) to the daemon's control socket,
   * thaws as soon as the reply is in: only the helper and the daemon run inside the window.
   */
  mark(
    socket: string,
    request: string,
  ): Promise<{ frozenMs: number | undefined; freezeMs: number | undefined; reply: string }>;
  cancel(): void;
}> {
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
    mark: async (socket: string, request: string) => {
      child.stdin.end(`mark\t${socket}\t${request}\n`);
      const marked = await next();
      const reply = await next();
      if (!marked.startsWith('marked ') || !reply.startsWith('reply '))
        throw new UserError(`the freeze helper said "${marked}", expected "marked"`);
      const [us, freezeUs] = marked.slice(7).split(' ').map(Number);
      const ms = (x: number | undefined) => (x !== undefined && x >= 0 ? x / 1000 : undefined);
      return { frozenMs: ms(us), freezeMs: ms(freezeUs), reply: reply.slice(6) };
    },
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
