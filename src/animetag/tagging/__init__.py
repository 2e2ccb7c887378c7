"""Stage 4, tagging: a trained run (or a foreign WD/Camie tagger) applied to images, and the
export in the formats tagger clients read. Imports the foundation and the stages before it."""
