"""`elk` subcommands of the trust area: keygen, sign, provision (logic in elk.trust, elk.provision)."""

import sys


def cmd_keygen(args) -> int:
    from elk import trust

    trust.key_paths(args.output, force=args.force)  # refuse to overwrite before asking for a passphrase
    passphrase = trust.passphrase_for_new_key(args.passphrase_file, args.no_passphrase)
    key, pub = trust.keygen(args.output, force=args.force, passphrase=passphrase)
    kid = trust.key_id(trust.load_public_key(pub)).hex()
    how = "encrypted with the passphrase" if passphrase is not None else "NOT encrypted"
    print(f"wrote {key} (private, mode 0600, {how}) and {pub} (public); key id {kid}")
    return 0


def cmd_sign(args) -> int:
    from elk import trust

    private = trust.load_private_key(args.key, args.passphrase_file)  # once: an encrypted key asks once
    out = trust.sign_file(args.image, private, security_counter=args.security_counter, out_path=args.output)
    hdr = trust.read_header(out.read_bytes())
    kid = trust.key_id(trust.public_bytes(private)).hex()
    print(f"signed {out}: key {kid}, security counter {hdr.security_counter}")
    return 0


def cmd_provision(args) -> int:
    from elk import boards, provision

    if args.factory_reset:
        print(provision.factory_reset_flash(args.factory_reset, boards.load(args.board).erase_block_kb))
        return 0
    if not args.port:
        raise provision.ProvisionError("pass --port PORT (or --factory-reset FLASH_FILE for a stopped emulated board)")
    if args.status:
        print(provision.status_port(args.port, baud=args.baud))
        return 0
    msg, warning = provision.provision_port(args.port, args.key, old_key=args.old_key,
                                            clear=args.clear, baud=args.baud,
                                            passphrase_file=args.passphrase_file)
    if warning:
        print(f"elk: warning: {warning}", file=sys.stderr)
    print(msg)
    return 0


def register(sub) -> None:
    p = sub.add_parser("keygen", help="make an Ed25519 owner key pair (PREFIX.key, PREFIX.pub)")
    p.add_argument("-o", "--output", required=True, metavar="PREFIX", help="path prefix, e.g. owner")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p.add_argument("--passphrase-file", metavar="FILE", default=None,
                   help="encrypt the private key with the passphrase in FILE (default: $ELK_KEY_PASSPHRASE, "
                   "else asked twice on the terminal)")
    p.add_argument("--no-passphrase", action="store_true",
                   help="write the private key unencrypted (PKCS#8 PEM, mode 0600)")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("sign", help="sign an image with an owner key (appends/replaces the trailer)")
    p.add_argument("image")
    p.add_argument("--key", required=True, help="private key (from elk keygen)")
    p.add_argument("--security-counter", type=int, default=None, metavar="N",
                   help="set the anti-rollback counter before signing (boards refuse lower counters)")
    p.add_argument("-o", "--output", default=None, help="write the signed image here instead of in place")
    p.add_argument("--passphrase-file", metavar="FILE", default=None,
                   help="passphrase of an encrypted private key (default: $ELK_KEY_PASSPHRASE, else asked "
                   "on the terminal)")
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("provision", help="store an owner public key on a board (it then refuses unsigned images)")
    p.add_argument("--port", help="serial port of the board (e.g. /dev/ttyUSB0 or an emulator pty)")
    p.add_argument("--key", help="new owner public key (.pub)")
    p.add_argument("--old-key", default=None, help="current owner private key, to re-provision an owned board")
    p.add_argument("--clear", action="store_true", help="remove the owner key (needs --old-key)")
    p.add_argument("--passphrase-file", metavar="FILE", default=None,
                   help="passphrase of an encrypted private key (default: $ELK_KEY_PASSPHRASE, else asked "
                   "on the terminal)")
    p.add_argument("--status", action="store_true", help="show the board's owner key and security counter")
    p.add_argument("--factory-reset", metavar="FLASH_FILE",
                   help="physical reset of a STOPPED emulated board: erase its provisioning area")
    p.add_argument("--board", default="host", help="board file for --factory-reset (erase block size)")
    p.add_argument("--baud", type=int, default=None)
    p.set_defaults(func=cmd_provision)

