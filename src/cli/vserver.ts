import type { Command } from 'commander';

export function registerVserverCommands(_program: Command): void {}
