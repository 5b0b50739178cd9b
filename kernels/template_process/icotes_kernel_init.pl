# The init of a forked kernel's PID namespace (pid 1 there; see icotes_fork_child.py), once it
# has forked the kernel: B exec's perl with this, so none of the template's memory stays in B.
# A Python init kept ~2 MB of pages of its own for the kernel's whole life: those the template
# and the kernel both wrote after the fork, whose originals only it still held.
#
# Arguments: the kernel's pid, the fd of B's link to the gateway, a pidfd of the kernel.
# Forwards the signals the gateway sends B to the kernel, reaps every child (orphans come to
# pid 1), writes the kernel's end on the link as `exit N` or `signal N` and exits, which ends
# the namespace. When the gateway goes the link is readable (closed): it exits then too.
# Runs as root with CAP_KILL alone and no_new_privs (set before the exec).
use strict;
my ($kernel, $link_fd, $pidfd) = @ARGV;
open(my $link, ">&=", $link_fd) or exit 1;
my $ended;

sub reap {
    my $pid;
    while (($pid = waitpid(-1, 1)) > 0) {  # 1: WNOHANG
        next if $pid != $kernel;
        $ended = ($? & 127) ? "signal " . ($? & 127) : "exit " . ($? >> 8);
    }
    $ended //= "exit 0" if $pid < 0;  # no child left
}

$SIG{$_} = sub { kill $_[0], $kernel } for qw(INT TERM HUP QUIT USR1 USR2);
$SIG{CHLD} = \&reap;  # a signal interrupts select(): orphans are reaped as they end
my $watched = '';
vec($watched, $link_fd, 1) = 1;
vec($watched, $pidfd, 1) = 1;  # readable once the kernel has ended: no wake-up is missed
while (1) {
    reap();
    if (defined $ended) {
        syswrite($link, $ended);
        exit 0;
    }
    my $ready = select(my $seen = $watched, undef, undef, undef);
    exit 0 if $ready > 0 && vec($seen, $link_fd, 1);
}
