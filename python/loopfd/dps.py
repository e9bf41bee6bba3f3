"""The Discoverable Partitions Specification's partition types.

(kind, architecture or "", GPT type GUID): the root and /usr families from
util-linux 2.38's list (`sfdisk --label gpt -T`), named as systemd names them;
the same table as the C client's (client/partitions.c).
"""

from __future__ import annotations

GPT_TYPES: tuple[tuple[str, str, str], ...] = (
    ("esp", "", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
    ("xbootldr", "", "BC13C2FF-59E6-4262-A352-B275FD6F7172"),
    ("swap", "", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"),
    ("home", "", "933AC7E1-2EB4-4F13-B844-0E14E2AEF915"),
    ("srv", "", "3B8F8425-20E0-4F3B-907F-1A25A76F98E8"),
    ("var", "", "4D21B016-B534-45C2-A9FB-5C16E091FD2D"),
    ("tmp", "", "7EC6F557-3BC5-4ACA-B293-16EF5DF639D1"),
    ("user-home", "", "773F91EF-66D4-49B5-BD83-D683BF40AD16"),
    ("linux-generic", "", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
    ("root", "x86", "44479540-F297-41B2-9AF7-D131D5F0458A"),
    ("root", "x86-64", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
    ("root", "alpha", "6523F8AE-3EB1-4E2A-A05A-18B695AE656F"),
    ("root", "arc", "D27F46ED-2919-4CB8-BD25-9531F3C16534"),
    ("root", "arm", "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3"),
    ("root", "arm64", "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"),
    ("root", "ia64", "993D8D3D-F80E-4225-855A-9DAF8ED7EA97"),
    ("root", "loongarch64", "77055800-792C-4F94-B39A-98C91B762BB6"),
    ("root", "mips-le", "37C58C8A-D913-4156-A25F-48B1B64E07F0"),
    ("root", "mips64-le", "700BDA43-7A34-4507-B179-EEB93D7A7CA3"),
    ("root", "ppc", "1DE3F1EF-FA98-47B5-8DCD-4A860A654D78"),
    ("root", "ppc64", "912ADE1D-A839-4913-8964-A10EEE08FBD2"),
    ("root", "ppc64-le", "C31C45E6-3F39-412E-80FB-4809C4980599"),
    ("root", "riscv32", "60D5A7FE-8E7D-435C-B714-3DD8162144E1"),
    ("root", "riscv64", "72EC70A6-CF74-40E6-BD49-4BDA08E8F224"),
    ("root", "s390", "08A7ACEA-624C-4A20-91E8-6E0FA67D23F9"),
    ("root", "s390x", "5EEAD9A9-FE09-4A1E-A1D7-520D00531306"),
    ("root", "tilegx", "C50CDD70-3862-4CC3-90E1-809A8C93EE2C"),
    ("usr", "x86", "75250D76-8CC6-458E-BD66-BD47CC81A812"),
    ("usr", "x86-64", "8484680C-9521-48C6-9C11-B0720656F69E"),
    ("usr", "alpha", "E18CF08C-33EC-4C0D-8246-C6C6FB3DA024"),
    ("usr", "arc", "7978A683-6316-4922-BBEE-38BFF5A2FECC"),
    ("usr", "arm", "7D0359A3-02B3-4F0A-865C-654403E70625"),
    ("usr", "arm64", "B0E01050-EE5F-4390-949A-9101B17104E9"),
    ("usr", "ia64", "4301D2A6-4E3B-4B2A-BB94-9E0B2C4225EA"),
    ("usr", "loongarch64", "E611C702-575C-4CBE-9A46-434FA0BF7E3F"),
    ("usr", "mips-le", "0F4868E9-9952-4706-979F-3ED3A473E947"),
    ("usr", "mips64-le", "C97C1F32-BA06-40B4-9F22-236061B08AA8"),
    ("usr", "ppc", "7D14FEC5-CC71-415D-9D6C-06BF0B3C3EAF"),
    ("usr", "ppc64", "2C9739E2-F068-46B3-9FD0-01C5A9AFBCCA"),
    ("usr", "ppc64-le", "15BB03AF-77E7-4D4A-B12B-C0D084F7491C"),
    ("usr", "riscv32", "B933FB22-5C3F-4F91-AF90-E2BB0FA50702"),
    ("usr", "riscv64", "BEAEC34B-8442-439B-A40B-984381ED097D"),
    ("usr", "s390", "CD0F869B-D0FB-4CA0-B141-9EA87CC78D66"),
    ("usr", "s390x", "8A4F5770-50AA-4ED3-874A-99B710DB6FEA"),
    ("usr", "tilegx", "55497029-C7C1-44CC-AA39-815ED1558630"),
    ("root-verity", "x86", "D13C5D3B-B5D1-422A-B29F-9454FDC89D76"),
    ("root-verity", "x86-64", "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5"),
    ("root-verity", "alpha", "FC56D9E9-E6E5-4C06-BE32-E74407CE09A5"),
    ("root-verity", "arc", "24B2D975-0F97-4521-AFA1-CD531E421B8D"),
    ("root-verity", "arm", "7386CDF2-203C-47A9-A498-F2ECCE45A2D6"),
    ("root-verity", "arm64", "DF3300CE-D69F-4C92-978C-9BFB0F38D820"),
    ("root-verity", "ia64", "86ED10D5-B607-45BB-8957-D350F23D0571"),
    ("root-verity", "loongarch64", "F3393B22-E9AF-4613-A948-9D3BFBD0C535"),
    ("root-verity", "mips-le", "D7D150D2-2A04-4A33-8F12-16651205FF7B"),
    ("root-verity", "mips64-le", "16B417F8-3E06-4F57-8DD2-9B5232F41AA6"),
    ("root-verity", "ppc", "98CFE649-1588-46DC-B2F0-ADD147424925"),
    ("root-verity", "ppc64", "9225A9A3-3C19-4D89-B4F6-EEFF88F17631"),
    ("root-verity", "ppc64-le", "906BD944-4589-4AAE-A4E4-DD983917446A"),
    ("root-verity", "riscv32", "AE0253BE-1167-4007-AC68-43926C14C5DE"),
    ("root-verity", "riscv64", "B6ED5582-440B-4209-B8DA-5FF7C419EA3D"),
    ("root-verity", "s390", "7AC63B47-B25C-463B-8DF8-B4A94E6C90E1"),
    ("root-verity", "s390x", "B325BFBE-C7BE-4AB8-8357-139E652D2F6B"),
    ("root-verity", "tilegx", "966061EC-28E4-4B2E-B4A5-1F0A825A1D84"),
    ("usr-verity", "x86", "8F461B0D-14EE-4E81-9AA9-049B6FB97ABD"),
    ("usr-verity", "x86-64", "77FF5F63-E7B6-4633-ACF4-1565B864C0E6"),
    ("usr-verity", "alpha", "8CCE0D25-C0D0-4A44-BD87-46331BF1DF67"),
    ("usr-verity", "arc", "FCA0598C-D880-4591-8C16-4EDA05C7347C"),
    ("usr-verity", "arm", "C215D751-7BCD-4649-BE90-6627490A4C05"),
    ("usr-verity", "arm64", "6E11A4E7-FBCA-4DED-B9E9-E1A512BB664E"),
    ("usr-verity", "ia64", "6A491E03-3BE7-4545-8E38-83320E0EA880"),
    ("usr-verity", "loongarch64", "F46B2C26-59AE-48F0-9106-C50ED47F673D"),
    ("usr-verity", "mips-le", "46B98D8D-B55C-4E8F-AAB3-37FCA7F80752"),
    ("usr-verity", "mips64-le", "3C3D61FE-B5F3-414D-BB71-8739A694A4EF"),
    ("usr-verity", "ppc", "DF765D00-270E-49E5-BC75-F47BB2118B09"),
    ("usr-verity", "ppc64", "BDB528A5-A259-475F-A87D-DA53FA736A07"),
    ("usr-verity", "ppc64-le", "EE2B9983-21E8-4153-86D9-B6901A54D1CE"),
    ("usr-verity", "riscv32", "CB1EE4E3-8CD0-4136-A0A4-AA61A32E8730"),
    ("usr-verity", "riscv64", "8F1056BE-9B05-47C4-81D6-BE53128E5B54"),
    ("usr-verity", "s390", "B663C618-E7BC-4D6D-90AA-11B756BB1797"),
    ("usr-verity", "s390x", "31741CC4-1A2A-4111-A581-E00B447D2D06"),
    ("usr-verity", "tilegx", "2FB4BF56-07FA-42DA-8132-6B139F2026AE"),
    ("root-verity-sig", "x86", "5996FC05-109C-48DE-808B-23FA0830B676"),
    ("root-verity-sig", "x86-64", "41092B05-9FC8-4523-994F-2DEF0408B176"),
    ("root-verity-sig", "alpha", "D46495B7-A053-414F-80F7-700C99921EF8"),
    ("root-verity-sig", "arc", "143A70BA-CBD3-4F06-919F-6C05683A78BC"),
    ("root-verity-sig", "arm", "42B0455F-EB11-491D-98D3-56145BA9D037"),
    ("root-verity-sig", "arm64", "6DB69DE6-29F4-4758-A7A5-962190F00CE3"),
    ("root-verity-sig", "ia64", "E98B36EE-32BA-4882-9B12-0CE14655F46A"),
    ("root-verity-sig", "loongarch64", "5AFB67EB-ECC8-4F85-AE8E-AC1E7C50E7D0"),
    ("root-verity-sig", "mips-le", "C919CC1F-4456-4EFF-918C-F75E94525CA5"),
    ("root-verity-sig", "mips64-le", "904E58EF-5C65-4A31-9C57-6AF5FC7C5DE7"),
    ("root-verity-sig", "ppc", "1B31B5AA-ADD9-463A-B2ED-BD467FC857E7"),
    ("root-verity-sig", "ppc64", "F5E2C20C-45B2-4FFA-BCE9-2A60737E1AAF"),
    ("root-verity-sig", "ppc64-le", "D4A236E7-E873-4C07-BF1D-BF6CF7F1C3C6"),
    ("root-verity-sig", "riscv32", "3A112A75-8729-4380-B4CF-764D79934448"),
    ("root-verity-sig", "riscv64", "EFE0F087-EA8D-4469-821A-4C2A96A8386A"),
    ("root-verity-sig", "s390", "3482388E-4254-435A-A241-766A065F9960"),
    ("root-verity-sig", "s390x", "C80187A5-73A3-491A-901A-017C3FA953E9"),
    ("root-verity-sig", "tilegx", "B3671439-97B0-4A53-90F7-2D5A8F3AD47B"),
    ("usr-verity-sig", "x86", "974A71C0-DE41-43C3-BE5D-5C5CCD1AD2C0"),
    ("usr-verity-sig", "x86-64", "E7BB33FB-06CF-4E81-8273-E543B413E2E2"),
    ("usr-verity-sig", "alpha", "5C6E1C76-076A-457A-A0FE-F3B4CD21CE6E"),
    ("usr-verity-sig", "arc", "94F9A9A1-9971-427A-A400-50CB297F0F35"),
    ("usr-verity-sig", "arm", "D7FF812F-37D1-4902-A810-D76BA57B975A"),
    ("usr-verity-sig", "arm64", "C23CE4FF-44BD-4B00-B2D4-B41B3419E02A"),
    ("usr-verity-sig", "ia64", "8DE58BC2-2A43-460D-B14E-A76E4A17B47F"),
    ("usr-verity-sig", "loongarch64", "B024F315-D330-444C-8461-44BBDE524E99"),
    ("usr-verity-sig", "mips-le", "3E23CA0B-A4BC-4B4E-8087-5AB6A26AA8A9"),
    ("usr-verity-sig", "mips64-le", "F2C2C7EE-ADCC-4351-B5C6-EE9816B66E16"),
    ("usr-verity-sig", "ppc", "7007891D-D371-4A80-86A4-5CB875B9302E"),
    ("usr-verity-sig", "ppc64", "0B888863-D7F8-4D9E-9766-239FCE4D58AF"),
    ("usr-verity-sig", "ppc64-le", "C8BFBD1E-268E-4521-8BBA-BF314C399557"),
    ("usr-verity-sig", "riscv32", "C3836A13-3137-45BA-B583-B16C50FE5EB4"),
    ("usr-verity-sig", "riscv64", "D2F9000A-7A18-453F-B5CD-4D32F77A7B32"),
    ("usr-verity-sig", "s390", "17440E4F-A8D0-467F-A46E-3912AE6EF2C5"),
    ("usr-verity-sig", "s390x", "3F324816-667B-46AE-86EE-9B0C0C6C11B4"),
    ("usr-verity-sig", "tilegx", "4EDE75E2-6CCC-4CC8-B9C7-70334B087510"),
)

#: MBR type bytes with a DPS meaning (the specification's MBR section).
MBR_TYPES: dict[int, str] = {0xEF: "esp", 0xEA: "xbootldr", 0x82: "swap", 0x83: "linux-generic"}


def gpt_type_name(guid: str) -> str:
    """"root-x86-64", "esp", ... for a type GUID; "" for none."""
    for kind, arch, g in GPT_TYPES:
        if g == guid.upper():
            return f"{kind}-{arch}" if arch else kind
    return ""


def kind_matches(type_name: str, kind: str) -> bool:
    """Whether type_name is kind with an architecture: "root" matches
    root-x86-64 and root-arm64, never root-verity-x86-64."""
    return any(k == kind and arch and type_name == f"{k}-{arch}"
               for k, arch, _ in GPT_TYPES)
