"""GnuPG: keys and passphrase, the gpg argument lists, running gpg, and parsing its status."""
