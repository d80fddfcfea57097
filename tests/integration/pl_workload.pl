#!/usr/bin/perl
# Allocation-heavy Perl workload for the LD_PRELOAD integration test.
#
# Usage: pl_workload.pl LIBRARY_BASENAME
#
# The first line says whether a file named LIBRARY_BASENAME is mapped into
# the process; test_programs.sh expects "yes" only under LD_PRELOAD.  The
# rest depends only on fixed seeds, so a run on any allocator prints the
# same text.  Debian's perl is built with usemymalloc=n, so every SV, hash
# bucket array and string buffer below comes from the system malloc.

use strict;
use warnings;
use Digest::MD5;

my $name = shift @ARGV or die "usage: pl_workload.pl LIBRARY_BASENAME\n";
my $mapped = "no";
open(my $maps, "<", "/proc/self/maps") or die "/proc/self/maps: $!\n";
while (<$maps>) {
    chomp;
    $mapped = "yes" if m{/([^/]+)$} && $1 eq $name;
}
close($maps);
print "library mapped: $mapped\n";
STDOUT->flush;    # kept even if a later crash loses buffered output

my $ctx = Digest::MD5->new;
for my $round (0 .. 1) {
    # Keys, an array, a string and a small hash per entry: about a million
    # allocations per round.  Perl's hash seed is random per process, so
    # nothing below depends on hash order without sorting first.
    my %h;
    my $x = 12345 + $round;
    for my $i (0 .. 199_999) {
        $x = ($x * 1103515245 + 12345) % 2147483648;
        $h{ sprintf("%08x-%d", $x, $i) } = [ $i, "v" x (1 + $x % 300), { n => $x } ];
    }
    my @keys = sort keys %h;

    # Drop every third entry and grow the strings of the rest in place
    # (realloc of each string buffer).
    for my $j (0 .. $#keys) {
        if ($j % 3 == 0) { delete $h{ $keys[$j] }; next; }
        $h{ $keys[$j] }[1] .= "w" x ($j % 50);
    }
    my @order = sort { $a <=> $b } map { $_->[0] } values %h;
    my $joined = join(",", map { $h{ $keys[$_] }[1] } grep { $_ % 3 } 0 .. 29_999);
    my @words = split /,/, $joined;

    $ctx->add(join(" ", @order[0 .. 999]), $joined, @keys[0 .. 99], scalar(@words));
    printf "round %d keys %d kept %d joined %d\n",
        $round, scalar(@keys), scalar(@order), length($joined);
}
print "digest ", $ctx->hexdigest, "\n";
