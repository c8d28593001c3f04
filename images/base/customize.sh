#!/bin/sh
# The base's last mmdebstrap customize hook ($1: the rootfs directory), run by `cargo xtask build-images`.
#
# Perl: Debian's git Depends on perl (and on liberror-perl), which brings perl-modules and libperl, about
# 50 MB. git 2.47 needs them for none of what a notebook user runs: every porcelain command is C or shell;
# the Perl parts are send-email, svn, cvs and archimport (separate packages, not installed) and instaweb
# (excluded in base.toml). perl-base, which dpkg and debconf use, is Essential and stays.
# So a stand-in package that Provides `perl` and `liberror-perl` keeps git's dependencies satisfied, and
# the real packages are purged: `apt-get check` stays clean and a child's `apt-get install` works. The
# stand-in is Multi-Arch: foreign, so it cannot satisfy a `perl:any` dependency (the usual form for Perl
# scripts): a package that really runs Perl (dpkg-dev in a build stage, say) still makes apt install the
# real perl, as does `apt-get install perl`.
set -eu
root="$1"

mkdir -p "$root/tmp/stand-in/DEBIAN"
cat >"$root/tmp/stand-in/DEBIAN/control" <<'CONTROL'
Package: jhub-perl-stand-in
Version: 1
Architecture: all
Multi-Arch: foreign
Priority: optional
Section: misc
Maintainer: jhub-docker <root@localhost>
Provides: perl, liberror-perl
Description: satisfies git's dependency on perl in the jhub-docker base
 git runs without Perl for everything a notebook user does; see images/base/customize.sh.
CONTROL
chroot "$root" dpkg-deb --root-owner-group --build /tmp/stand-in /tmp/stand-in.deb >/dev/null
chroot "$root" dpkg --install /tmp/stand-in.deb
chroot "$root" dpkg --purge perl libperl5.40 perl-modules-5.40 liberror-perl
rm -rf "$root/tmp/stand-in" "$root/tmp/stand-in.deb"
chroot "$root" apt-get check -qq

# Leftovers that no image needs: debconf's previous databases and apt's binary caches (apt rebuilds them).
rm -f "$root"/var/cache/debconf/*-old "$root"/var/cache/apt/*.bin
