import type { Command } from 'commander';

export function registerVolumeCommands(_program: Command): void {}
