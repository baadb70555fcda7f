/* The Xen ELF note that makes an ELF image PVH-bootable: XEN_ELFNOTE_PHYS32_ENTRY (18) giving
 * the 32-bit entry point (xen/include/public/elfnote.h). */
	.section .note.pvh, "a", @note
	.balign 4
	.long 4          /* namesz: "Xen\0" */
	.long 4          /* descsz */
	.long 18         /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.long entry32_pvh
	.balign 4

	.section .note.GNU-stack, "", @progbits
