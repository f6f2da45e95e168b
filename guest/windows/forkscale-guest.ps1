<#
.SYNOPSIS
    forkscale-guest for Windows: the in-guest side of forkscale instant clones (VMFork).

.DESCRIPTION
    Same guestinfo contract as guest/linux/forkscale-guest (see guest/README.md):

      prepare  in the source: release DHCP and disable the primary adapter
      freeze   in the source: rpctool.exe "instantclone.freeze"; the call returns inside every
               clone, which then runs the resume steps
      resume   in a clone: read guestinfo.forkscale.* (id, pool, hostname, ip, prefix|netmask,
               gateway, dns, mac, nic), give the clone its identity and report
               guestinfo.forkscale.status = ready | error:<step>:<reason>
      boot     for a startup scheduled task: in a clone, finish a resume that needed a restart
               (rename, domain join); in the source, prepare + freeze
      status   show the state and what resume would do (changes nothing)

    Domain join is a hook: if $env:ProgramData\forkscale\hooks\domain-join.ps1 exists it is run
    once per clone id with -Hostname -Pool -Id -Adapter. The hook obtains its own credentials
    (an offline domain join blob, a gMSA, a vault); a password never travels in guestinfo.
    The hook exits 0 (joined), 3010 (joined, restart needed) or anything else (error).

    Environment knobs:
      FORKSCALE_RPCTOOL          default "$env:ProgramFiles\VMware\VMware Tools\rpctool.exe"
      FORKSCALE_DRY_SYSTEM=1     log instead of changing the machine (adapters, IP, name, time)
      FORKSCALE_STEP_TIMEOUT     seconds per external command and per wait (default 60)
      FORKSCALE_GUESTINFO_WAIT   seconds to wait for guestinfo.forkscale.id (default 30)
      FORKSCALE_RENAME_RESTART   1 (default): restart after a rename so the name takes effect,
                                 then `boot` completes the resume; 0: report ready, the new
                                 name applies at the next restart
      FORKSCALE_CLOCK_OPTIONAL   1: a failed w32tm /resync is a warning, not an error
      FORKSCALE_STATE_DIR        default "$env:ProgramData\forkscale"

.NOTES
    Runs as SYSTEM (scheduled task) with Windows PowerShell 5.1 or PowerShell 7.
#>
[CmdletBinding()]
param(
    [Parameter(Position = 0)]
    [ValidateSet('prepare', 'freeze', 'resume', 'boot', 'status')]
    [string]$Command = 'status'
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$Script:Version = '1.0.0'
$Script:Step = 'init'

function Get-Knob {
    param([string]$Name, [string]$Default)
    $value = [Environment]::GetEnvironmentVariable($Name)
    if ([string]::IsNullOrEmpty($value)) { return $Default }
    return $value
}

$Script:RpcTool = Get-Knob 'FORKSCALE_RPCTOOL' (Join-Path $env:ProgramFiles 'VMware\VMware Tools\rpctool.exe')
$Script:Dry = ((Get-Knob 'FORKSCALE_DRY_SYSTEM' '0') -eq '1')
$Script:StepTimeout = [int](Get-Knob 'FORKSCALE_STEP_TIMEOUT' '60')
$Script:GuestInfoWait = [int](Get-Knob 'FORKSCALE_GUESTINFO_WAIT' '30')
$Script:RenameRestart = ((Get-Knob 'FORKSCALE_RENAME_RESTART' '1') -eq '1')
$Script:ClockOptional = ((Get-Knob 'FORKSCALE_CLOCK_OPTIONAL' '0') -eq '1')
$Script:StateDir = Get-Knob 'FORKSCALE_STATE_DIR' (Join-Path $env:ProgramData 'forkscale')
$Script:HookDir = Join-Path $Script:StateDir 'hooks'
$Script:LogFile = Join-Path $Script:StateDir 'forkscale-guest.log'

# ---------------------------------------------------------------------------------------------
# logging, bounded commands
# ---------------------------------------------------------------------------------------------

function Write-Log {
    param([string]$Level, [string]$Message)
    $line = '{0} forkscale-guest: {1}: [{2}] {3}' -f (Get-Date -Format 'yyyy-MM-ddTHH:mm:ssK'), $Level, $Script:Step, $Message
    [Console]::Error.WriteLine($line)
    try {
        if (-not (Test-Path -LiteralPath $Script:StateDir)) {
            New-Item -ItemType Directory -Path $Script:StateDir -Force | Out-Null
        }
        Add-Content -LiteralPath $Script:LogFile -Value $line -Encoding UTF8
    }
    catch {
        [Console]::Error.WriteLine('forkscale-guest: cannot write the log file: ' + $_.Exception.Message)
    }
}

function ConvertTo-Argument {
    param([string]$Value)
    # One argv element for CreateProcess: quote, double the backslashes that precede a quote.
    $escaped = $Value -replace '(\\*)"', '$1$1\"'
    $escaped = $escaped -replace '(\\+)$', '$1$1'
    return '"' + $escaped + '"'
}

# Run a program, bounded by FORKSCALE_STEP_TIMEOUT; returns ExitCode, Output, ErrorText.
function Invoke-Bounded {
    param(
        [Parameter(Mandatory = $true)][string]$FilePath,
        [string[]]$ArgumentList = @(),
        [int]$TimeoutSeconds = $Script:StepTimeout
    )
    $psi = New-Object System.Diagnostics.ProcessStartInfo
    $psi.FileName = $FilePath
    $psi.Arguments = (@($ArgumentList | ForEach-Object { ConvertTo-Argument $_ }) -join ' ')
    $psi.UseShellExecute = $false
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $true
    $psi.CreateNoWindow = $true
    $process = [System.Diagnostics.Process]::Start($psi)
    $stdout = $process.StandardOutput.ReadToEndAsync()
    $stderr = $process.StandardError.ReadToEndAsync()
    if (-not $process.WaitForExit($TimeoutSeconds * 1000)) {
        try { $process.Kill() } catch { Write-Log 'warning' ('could not kill ' + $FilePath) }
        throw ('{0} timed out after {1}s' -f $FilePath, $TimeoutSeconds)
    }
    $process.WaitForExit()
    return [pscustomobject]@{
        ExitCode  = $process.ExitCode
        Output    = $stdout.Result.Trim()
        ErrorText = $stderr.Result.Trim()
    }
}

# A change to the live machine: logged, skipped when FORKSCALE_DRY_SYSTEM=1.
function Invoke-System {
    param([string]$Description, [scriptblock]$Action)
    if ($Script:Dry) {
        Write-Log 'info' ('dry-run: ' + $Description)
        return
    }
    Write-Log 'info' ('run: ' + $Description)
    & $Action
}

# A native program that changes the machine; throws on a non-zero exit.
function Invoke-SystemProgram {
    param([string]$FilePath, [string[]]$ArgumentList = @())
    $description = (@($FilePath) + $ArgumentList) -join ' '
    if ($Script:Dry) {
        Write-Log 'info' ('dry-run: ' + $description)
        return
    }
    Write-Log 'info' ('run: ' + $description)
    $result = Invoke-Bounded -FilePath $FilePath -ArgumentList $ArgumentList
    if ($result.ExitCode -ne 0) {
        throw ('{0} exited {1}: {2}' -f $description, $result.ExitCode, $result.ErrorText)
    }
}

# ---------------------------------------------------------------------------------------------
# guestinfo and status
# ---------------------------------------------------------------------------------------------

function Test-RpcTool {
    return (Test-Path -LiteralPath $Script:RpcTool -PathType Leaf)
}

function Get-GuestInfo {
    param([string]$Key)
    $result = Invoke-Bounded -FilePath $Script:RpcTool -ArgumentList @("info-get guestinfo.forkscale.$Key")
    if ($result.ExitCode -ne 0) { return '' }
    return $result.Output.Trim()
}

function Set-GuestInfo {
    param([string]$Key, [string]$Value)
    $result = Invoke-Bounded -FilePath $Script:RpcTool -ArgumentList @("info-set guestinfo.forkscale.$Key $Value")
    if ($result.ExitCode -ne 0) {
        Write-Log 'err' ('could not set guestinfo.forkscale.{0}: {1}' -f $Key, $result.ErrorText)
        return $false
    }
    return $true
}

# Report error:<step>:<reason> to the controller and stop with exit code 1.
function Stop-WithError {
    param([string]$Reason)
    $clean = ($Reason -replace '[\r\n"]+', ' ').Trim()
    if ($clean.Length -gt 200) { $clean = $clean.Substring(0, 200) }
    Write-Log 'err' ("step '{0}' failed: {1}" -f $Script:Step, $clean)
    if (-not (Test-RpcTool)) { exit 2 }
    if (-not (Set-GuestInfo 'status' ('error:{0}:{1}' -f $Script:Step, $clean))) { exit 2 }
    exit 1
}

# Run one step; any exception becomes error:<step>:<message>.
function Invoke-Step {
    param([string]$Name, [scriptblock]$Body)
    $Script:Step = $Name
    try {
        & $Body
    }
    catch {
        Stop-WithError $_.Exception.Message
    }
}

# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------

function Test-IPv4 {
    param([string]$Value)
    if ($Value -notmatch '^\d{1,3}(\.\d{1,3}){3}$') { return $false }
    foreach ($octet in $Value.Split('.')) {
        if ([int]$octet -gt 255) { return $false }
    }
    return $true
}

function ConvertTo-PrefixLength {
    param([string]$Netmask)
    if (-not (Test-IPv4 $Netmask)) { throw "invalid netmask '$Netmask'" }
    $bits = ''
    foreach ($octet in $Netmask.Split('.')) {
        $bits += [Convert]::ToString([int]$octet, 2).PadLeft(8, '0')
    }
    if ($bits -notmatch '^1+0*$') { throw "invalid netmask '$Netmask'" }
    return $bits.TrimEnd('0').Length
}

function Read-Identity {
    $waited = 0
    $id = Get-GuestInfo 'id'
    while ([string]::IsNullOrEmpty($id)) {
        if ($waited -ge $Script:GuestInfoWait) { throw 'missing guestinfo.forkscale.id' }
        Start-Sleep -Seconds 1
        $waited++
        $id = Get-GuestInfo 'id'
    }
    $gi = [ordered]@{ id = $id }
    foreach ($key in @('pool', 'hostname', 'ip', 'prefix', 'netmask', 'gateway', 'dns', 'mac', 'nic')) {
        $gi[$key] = Get-GuestInfo $key
    }
    if ($gi.id -notmatch '^[A-Za-z0-9_.:-]+$') { throw ("invalid id '{0}'" -f $gi.id) }
    if ($gi.pool -and $gi.pool -notmatch '^[A-Za-z0-9_.:-]+$') { throw ("invalid pool '{0}'" -f $gi.pool) }
    if (-not $gi.hostname) { throw 'missing guestinfo.forkscale.hostname' }
    $short = $gi.hostname.Split('.')[0]
    # a Windows computer (NetBIOS) name: 1-15 characters, letters, digits and hyphens
    if ($short -notmatch '^[A-Za-z0-9][A-Za-z0-9-]{0,14}$' -or $short -match '^\d+$') {
        throw ("invalid Windows computer name '{0}'" -f $short)
    }
    $gi['short'] = $short
    if ($gi.mac) {
        $gi.mac = $gi.mac.ToLowerInvariant().Replace('-', ':')
        if ($gi.mac -notmatch '^([0-9a-f]{2}:){5}[0-9a-f]{2}$') { throw ("invalid mac '{0}'" -f $gi.mac) }
    }
    if ($gi.ip) {
        if (-not (Test-IPv4 $gi.ip)) { throw ("invalid ip '{0}'" -f $gi.ip) }
        if ($gi.prefix) {
            $prefix = 0
            if (-not [int]::TryParse($gi.prefix.TrimStart('/'), [ref]$prefix) -or $prefix -lt 1 -or $prefix -gt 32) {
                throw ("invalid prefix '{0}'" -f $gi.prefix)
            }
            $gi.prefix = [string]$prefix
        }
        elseif ($gi.netmask) {
            $gi.prefix = [string](ConvertTo-PrefixLength $gi.netmask)
        }
        else {
            throw ('static ip {0} needs guestinfo.forkscale.prefix or guestinfo.forkscale.netmask' -f $gi.ip)
        }
        if ($gi.gateway -and -not (Test-IPv4 $gi.gateway)) { throw ("invalid gateway '{0}'" -f $gi.gateway) }
    }
    $dnsList = @()
    if ($gi.dns) {
        foreach ($server in ($gi.dns -split '[,\s]+')) {
            if (-not $server) { continue }
            if (-not (Test-IPv4 $server)) { throw ("invalid dns server '{0}'" -f $server) }
            $dnsList += $server
        }
    }
    $gi['dnsList'] = $dnsList
    return $gi
}

# ---------------------------------------------------------------------------------------------
# state (one marker per identity step, like the Linux script)
# ---------------------------------------------------------------------------------------------

function Test-Marker {
    param([string]$Name, [string]$Id)
    $path = Join-Path $Script:StateDir ($Name + '.for')
    if (-not (Test-Path -LiteralPath $path)) { return $false }
    return ((Get-Content -LiteralPath $path -TotalCount 1) -eq $Id)
}

function Set-Marker {
    param([string]$Name, [string]$Id)
    if (-not (Test-Path -LiteralPath $Script:StateDir)) {
        New-Item -ItemType Directory -Path $Script:StateDir -Force | Out-Null
    }
    Set-Content -LiteralPath (Join-Path $Script:StateDir ($Name + '.for')) -Value $Id -Encoding ASCII
}

function Clear-Marker {
    param([string]$Name)
    Remove-Item -LiteralPath (Join-Path $Script:StateDir ($Name + '.for')) -Force -ErrorAction SilentlyContinue
}

# ---------------------------------------------------------------------------------------------
# adapters
# ---------------------------------------------------------------------------------------------

function ConvertTo-WindowsMac {
    param([string]$Mac)
    return $Mac.ToUpperInvariant().Replace(':', '-')
}

function Find-Adapter {
    param($Identity)
    $adapters = @(Get-NetAdapter -Physical -ErrorAction SilentlyContinue | Sort-Object -Property ifIndex)
    if ($Identity.mac) {
        $wanted = ConvertTo-WindowsMac $Identity.mac
        $byMac = @($adapters | Where-Object { $_.MacAddress -eq $wanted })
        if ($byMac.Count -gt 0) { return $byMac[0] }
    }
    if ($Identity.nic) {
        $byName = @($adapters | Where-Object { $_.Name -eq $Identity.nic })
        if ($byName.Count -gt 0) { return $byName[0] }
        throw ("no adapter named '{0}'" -f $Identity.nic)
    }
    if ($adapters.Count -gt 0) { return $adapters[0] }
    throw 'no physical network adapter found'
}

# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------

function Invoke-Resume {
    if (-not (Test-RpcTool)) {
        Write-Log 'err' ('rpctool not found: ' + $Script:RpcTool)
        exit 2
    }
    $Script:Step = 'resume'
    Write-Log 'info' ('forkscale-guest {0} resume' -f $Script:Version)
    [void](Set-GuestInfo 'status' 'resuming')
    $identity = $null
    $adapter = $null
    $machineGuid = ''

    Invoke-Step 'guestinfo' {
        $Script:Identity = Read-Identity
    }
    $identity = $Script:Identity
    Write-Log 'info' ('id={0} pool={1} hostname={2} ip={3} mac={4}' -f $identity.id, $identity.pool,
        $identity.hostname, $(if ($identity.ip) { $identity.ip + '/' + $identity.prefix } else { 'dhcp' }), $identity.mac)

    Invoke-Step 'clock' {
        # the clock stood still while the source was frozen
        try {
            Invoke-SystemProgram 'net.exe' @('start', 'w32time')
        }
        catch {
            Write-Log 'info' 'w32time already running'
        }
        try {
            Invoke-SystemProgram 'w32tm.exe' @('/resync', '/force')
        }
        catch {
            if (-not $Script:ClockOptional) { throw }
            Write-Log 'warning' ('clock not resynchronised: ' + $_.Exception.Message)
        }
    }

    Invoke-Step 'entropy' {
        # Windows reseeds its RNG from the VM Generation ID vSphere changes for every clone.
        Write-Log 'info' 'Windows reseeds from the VM Generation ID; nothing to do'
    }

    Invoke-Step 'machine-id' {
        $key = 'HKLM:\SOFTWARE\Microsoft\Cryptography'
        $current = (Get-ItemProperty -Path $key -Name 'MachineGuid').MachineGuid
        if (Test-Marker 'machine-id' $identity.id) {
            Write-Log 'info' ('MachineGuid already regenerated for id {0}: {1} (kept)' -f $identity.id, $current)
            $Script:MachineGuid = $current
        }
        else {
            $new = [guid]::NewGuid().ToString()
            Invoke-System ('set MachineGuid {0} -> {1}' -f $current, $new) {
                Set-ItemProperty -Path $key -Name 'MachineGuid' -Value $new
            }
            Set-Marker 'machine-id' $identity.id
            $Script:MachineGuid = $new
        }
    }
    $machineGuid = $Script:MachineGuid

    Invoke-Step 'nic' {
        $found = Find-Adapter $identity
        # the virtual hardware has the clone's MAC; the driver reads it when the adapter starts
        Invoke-System ('restart adapter ' + $found.Name) {
            Enable-NetAdapter -Name $found.Name -Confirm:$false
            Restart-NetAdapter -Name $found.Name -Confirm:$false
        }
        if ($identity.mac -and -not $Script:Dry) {
            $wanted = ConvertTo-WindowsMac $identity.mac
            $waited = 0
            while ((Get-NetAdapter -Name $found.Name).MacAddress -ne $wanted) {
                if ($waited -ge $Script:StepTimeout) {
                    throw ('no adapter with MAC {0} after {1}s' -f $identity.mac, $Script:StepTimeout)
                }
                Start-Sleep -Seconds 1
                $waited++
            }
        }
        $Script:Adapter = Get-NetAdapter -Name $found.Name
    }
    $adapter = $Script:Adapter

    Invoke-Step 'network' {
        $index = $adapter.ifIndex
        if ($identity.ip) {
            Invoke-System ('static {0}/{1} gw {2} on {3}' -f $identity.ip, $identity.prefix, $identity.gateway, $adapter.Name) {
                Set-NetIPInterface -InterfaceIndex $index -AddressFamily IPv4 -Dhcp Disabled
                Get-NetIPAddress -InterfaceIndex $index -AddressFamily IPv4 -ErrorAction SilentlyContinue |
                    Remove-NetIPAddress -Confirm:$false
                Get-NetRoute -InterfaceIndex $index -DestinationPrefix '0.0.0.0/0' -ErrorAction SilentlyContinue |
                    Remove-NetRoute -Confirm:$false
                $address = @{
                    InterfaceIndex = $index
                    IPAddress      = $identity.ip
                    PrefixLength   = [byte]$identity.prefix
                    AddressFamily  = 'IPv4'
                }
                if ($identity.gateway) { $address['DefaultGateway'] = $identity.gateway }
                New-NetIPAddress @address | Out-Null
            }
        }
        else {
            Invoke-System ('DHCP on ' + $adapter.Name) {
                Get-NetRoute -InterfaceIndex $index -DestinationPrefix '0.0.0.0/0' -ErrorAction SilentlyContinue |
                    Remove-NetRoute -Confirm:$false
                Set-NetIPInterface -InterfaceIndex $index -AddressFamily IPv4 -Dhcp Enabled
            }
            Invoke-SystemProgram 'ipconfig.exe' @('/renew', $adapter.Name)
        }
        if ($identity.dnsList.Count -gt 0) {
            Invoke-System ('DNS {0} on {1}' -f ($identity.dnsList -join ','), $adapter.Name) {
                Set-DnsClientServerAddress -InterfaceIndex $index -ServerAddresses $identity.dnsList
            }
        }
        else {
            Invoke-System ('DNS from DHCP on ' + $adapter.Name) {
                Set-DnsClientServerAddress -InterfaceIndex $index -ResetServerAddresses
            }
        }
    }

    $restartNeeded = $false
    Invoke-Step 'hostname' {
        if ($env:COMPUTERNAME -ieq $identity.short) {
            Write-Log 'info' ('computer name is already ' + $identity.short)
        }
        else {
            Invoke-System ('Rename-Computer {0}' -f $identity.short) {
                Rename-Computer -NewName $identity.short -Force -WarningAction SilentlyContinue
            }
            $Script:RestartNeeded = $Script:RenameRestart
        }
    }
    if ((Test-Path variable:Script:RestartNeeded) -and $Script:RestartNeeded) { $restartNeeded = $true }

    Invoke-Step 'domain-join' {
        $hook = Join-Path $Script:HookDir 'domain-join.ps1'
        if (-not (Test-Path -LiteralPath $hook -PathType Leaf)) {
            Write-Log 'info' 'no domain-join hook'
        }
        elseif (Test-Marker 'domain-join' $identity.id) {
            Write-Log 'info' ('domain join already done for id ' + $identity.id)
        }
        elseif ($restartNeeded) {
            Write-Log 'info' 'domain join after the restart that applies the new name'
        }
        elseif ($Script:Dry) {
            Write-Log 'info' ('dry-run: ' + $hook)
        }
        else {
            Write-Log 'info' ('run: ' + $hook)
            & $hook -Hostname $identity.short -Pool $identity.pool -Id $identity.id -Adapter $adapter.Name
            $code = $LASTEXITCODE
            if ($code -eq 3010) {
                Set-Marker 'domain-join' $identity.id
                $Script:RestartNeeded = $true
            }
            elseif ($code -ne 0) {
                throw ('domain-join hook exited {0}' -f $code)
            }
            else {
                Set-Marker 'domain-join' $identity.id
            }
        }
    }
    if ((Test-Path variable:Script:RestartNeeded) -and $Script:RestartNeeded) { $restartNeeded = $true }

    if ($restartNeeded) {
        $Script:Step = 'restart'
        Set-Marker 'restart-pending' $identity.id
        [void](Set-GuestInfo 'status' 'restarting')
        Invoke-System 'Restart-Computer' { Restart-Computer -Force }
        return
    }

    Invoke-Step 'verify' {
        if ($Script:Dry) {
            Write-Log 'info' 'dry-run: not waiting for an address'
            return
        }
        $waited = 0
        while ($true) {
            $addresses = @(Get-NetIPAddress -InterfaceIndex $adapter.ifIndex -AddressFamily IPv4 -ErrorAction SilentlyContinue |
                    Where-Object { $_.AddressState -eq 'Preferred' -and $_.IPAddress -notlike '169.254.*' })
            if ($identity.ip) { $addresses = @($addresses | Where-Object { $_.IPAddress -eq $identity.ip }) }
            if ($addresses.Count -gt 0) { break }
            if ($waited -ge $Script:StepTimeout) {
                throw ('no IPv4 address on {0} after {1}s' -f $adapter.Name, $Script:StepTimeout)
            }
            Start-Sleep -Seconds 1
            $waited++
        }
    }

    Invoke-Step 'report' {
        Clear-Marker 'restart-pending'
        $state = [ordered]@{
            id = $identity.id; pool = $identity.pool; hostname = $identity.hostname
            adapter = $adapter.Name; mac = $identity.mac; machine_id = $machineGuid
            ip = $(if ($identity.ip) { $identity.ip } else { 'dhcp' })
        }
        $lines = @($state.GetEnumerator() | ForEach-Object { '{0}={1}' -f $_.Key, $_.Value })
        Set-Content -LiteralPath (Join-Path $Script:StateDir 'identity') -Value $lines -Encoding ASCII
        [void](Set-GuestInfo 'machine_id' $machineGuid)
        if (-not (Set-GuestInfo 'status' 'ready')) { exit 2 }
        Write-Log 'info' ('clone {0} is ready as {1}' -f $identity.id, $identity.short)
    }
}

function Invoke-Prepare {
    if (-not (Test-RpcTool)) {
        Write-Log 'err' ('rpctool not found: ' + $Script:RpcTool)
        exit 2
    }
    Invoke-Step 'prepare' {
        $identity = @{ mac = ''; nic = (Get-GuestInfo 'nic') }
        $adapter = Find-Adapter $identity
        Invoke-SystemProgram 'ipconfig.exe' @('/release', $adapter.Name)
        Invoke-System ('Disable-NetAdapter ' + $adapter.Name) {
            Disable-NetAdapter -Name $adapter.Name -Confirm:$false
        }
        [void](Set-GuestInfo 'status' 'prepared')
    }
}

function Invoke-Freeze {
    if (-not (Test-RpcTool)) {
        Write-Log 'err' ('rpctool not found: ' + $Script:RpcTool)
        exit 2
    }
    $Script:Step = 'freeze'
    [void](Set-GuestInfo 'status' 'frozen')
    Write-Log 'info' 'calling instantclone.freeze: the source stops here; each clone continues from here'
    # No timeout: in the source this call never returns.
    & $Script:RpcTool 'instantclone.freeze'
    $code = $LASTEXITCODE
    if ($code -ne 0) {
        try {
            $adapter = Find-Adapter @{ mac = ''; nic = (Get-GuestInfo 'nic') }
            Invoke-System ('Enable-NetAdapter ' + $adapter.Name) { Enable-NetAdapter -Name $adapter.Name -Confirm:$false }
        }
        catch {
            Write-Log 'warning' ('could not restore the network: ' + $_.Exception.Message)
        }
        Stop-WithError ('instantclone.freeze exited {0}' -f $code)
    }
    Write-Log 'info' 'resumed as a clone'
    Invoke-Resume
}

function Invoke-Boot {
    $pending = Join-Path $Script:StateDir 'restart-pending.for'
    $done = Join-Path $Script:StateDir 'identity'
    if (Test-Path -LiteralPath $pending) {
        Write-Log 'info' 'finishing the resume that needed a restart'
        Invoke-Resume
    }
    elseif (Test-Path -LiteralPath $done) {
        Write-Log 'info' 'a clone that restarted: identity is in place, nothing to do'
    }
    else {
        Invoke-Prepare
        Invoke-Freeze
    }
}

function Show-Status {
    Write-Output ('forkscale-guest {0} (Windows)' -f $Script:Version)
    Write-Output ('  rpctool:       {0}{1}' -f $Script:RpcTool, $(if (Test-RpcTool) { '' } else { ' (not found)' }))
    Write-Output ('  dry-system:    {0}' -f $Script:Dry)
    Write-Output ('  computer name: {0}' -f $env:COMPUTERNAME)
    Write-Output ('  state dir:     {0}' -f $Script:StateDir)
    $identityFile = Join-Path $Script:StateDir 'identity'
    if (Test-Path -LiteralPath $identityFile) {
        Write-Output '  last resume:'
        Get-Content -LiteralPath $identityFile | ForEach-Object { Write-Output ('    ' + $_) }
    }
    else {
        Write-Output '  last resume:   never (this looks like a source, not a clone)'
    }
    if (Test-RpcTool) {
        Write-Output '  guestinfo:'
        foreach ($key in @('id', 'pool', 'hostname', 'ip', 'prefix', 'netmask', 'gateway', 'dns', 'mac', 'nic', 'status')) {
            $value = Get-GuestInfo $key
            if (-not $value) { $value = '(unset)' }
            Write-Output ('    guestinfo.forkscale.{0} = {1}' -f $key, $value)
        }
    }
}

switch ($Command) {
    'prepare' { Invoke-Prepare }
    'freeze' { Invoke-Freeze }
    'resume' { Invoke-Resume }
    'boot' { Invoke-Boot }
    'status' { Show-Status }
}
exit 0
